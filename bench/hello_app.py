"""The smallest Flask app, the reference for the ``accounts`` benchmark.

``gunicorn -c gunicorn.conf.py bench.hello_app:app``: one route, ``GET /``,
answering ``hello`` as text/html; no extensions, no hooks, no session, no
database. Under the same gunicorn settings as the project's app, its req/s is
the ceiling that gunicorn + Flask give on the machine, and the project's pages
are measured against it.
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "hello"
