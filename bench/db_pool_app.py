"""WSGI app for the ``db_pool`` benchmark: ``gunicorn -c gunicorn.conf.py bench.db_pool_app:app``.

It is the real application (``create_app()``, every hook and extension, the
settings read from the environment) plus two routes that read the same row
and render it the same way, so the only difference between them is how the
connection is obtained:

* ``/bench/pooled``: ``db.fetch_one`` on a connection borrowed from our pool;
* ``/bench/fresh``: a new ``pymysql.connect(...)`` per request, closed after.

``bench/db_pool.py`` creates the database and its one-row table before it
starts gunicorn, and drops them afterwards; this module only reads.
``BENCH_INSTANCE_PATH``, when set, keeps the instance folder (session files)
out of the repository's ``instance/``.
"""

from __future__ import annotations

import os
from typing import Any

import pymysql
import pymysql.cursors
from flask import Blueprint, Flask, Response, abort, current_app, jsonify

from project import create_app
from project.extensions import db
from project.urls import DatabaseURL

TABLE = "bench_row"
ROW_ID = 1
ROW_SQL = f"SELECT id, name, value FROM {TABLE} WHERE id = %s"  # noqa: S608 - constant name

#: What the pool runs on each connection it opens (``setsession`` in project/db.py);
#: the fresh connection runs it too, so both variants do the same work per connection.
SESSION_SETUP = "SET time_zone = '+00:00'"

bp = Blueprint("bench", __name__, url_prefix="/bench")


def _render(row: dict[str, Any] | None) -> Response:
    """One rendering for both variants, so only the connection handling differs."""
    if row is None:
        abort(404)
    return jsonify(row)


@bp.get("/pooled")
def pooled() -> Response:
    return _render(db.fetch_one(ROW_SQL, (ROW_ID,)))


def connect_fresh(url: DatabaseURL) -> pymysql.connections.Connection:
    """Open a connection with the same options project/db.py gives its pool."""
    options = dict(url.options)
    con = pymysql.connect(
        host=url.host,
        port=url.port,
        user=url.user,
        password=url.password,
        database=url.name,
        unix_socket=options.get("unix_socket"),
        charset=options.get("charset", "utf8mb4"),
        connect_timeout=int(options.get("connect_timeout", 5)),
        cursorclass=pymysql.cursors.DictCursor,
        autocommit=True,
    )
    try:
        with con.cursor() as cursor:
            cursor.execute(SESSION_SETUP)
    except BaseException:
        con.close()
        raise
    return con


@bp.get("/fresh")
def fresh() -> Response:
    con = connect_fresh(current_app.config["DATABASE"])
    try:
        with con.cursor() as cursor:
            cursor.execute(ROW_SQL, (ROW_ID,))
            row = cursor.fetchone()
    finally:
        con.close()
    return _render(row)


def build_app() -> Flask:
    """The project's app, configured from the environment, with the bench routes added."""
    instance = os.environ.get("BENCH_INSTANCE_PATH")
    application = create_app(overrides={"INSTANCE_PATH": instance} if instance else None)
    application.register_blueprint(bp)
    return application


app = build_app()
