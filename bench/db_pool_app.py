"""WSGI app for the ``db_pool`` benchmark: ``gunicorn ... 'bench.db_pool_app:build_app()'``.

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

The fresh route connects with :func:`project.db.mysql_connect_args` and runs
:data:`project.db.MYSQL_SESSION_SETUP`, exactly what the pool does for each of
its connections, so the two variants cannot drift apart.

The app is built by a factory that gunicorn calls in each worker, never at
import time, so ``bench.db_pool`` can import the constants below without
building an app from its own environment.
"""

from __future__ import annotations

import os
from typing import Any

import pymysql
from flask import Blueprint, Flask, Response, abort, current_app, jsonify

from project import create_app
from project.db import MYSQL_SESSION_SETUP, mysql_connect_args
from project.extensions import db
from project.urls import DatabaseURL

TABLE = "bench_row"
ROW_ID = 1
ROW_SQL = f"SELECT id, name, value FROM {TABLE} WHERE id = %s"  # noqa: S608 - constant name

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
    """Open a connection exactly as the pool opens each of its own (project/db.py)."""
    con = pymysql.connect(**mysql_connect_args(url))
    try:
        with con.cursor() as cursor:
            for statement in MYSQL_SESSION_SETUP:
                cursor.execute(statement)
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
