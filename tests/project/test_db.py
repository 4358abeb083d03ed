"""The database layer on both engines: one SQL dialect in, dicts out, nothing half-written."""

from __future__ import annotations

import threading
import time

import pymysql
import pytest
from flask import Flask

from project.db import (
    PING_INTERVAL_S,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    to_sqlite_paramstyle,
)
from project.extensions import db
from project.settings import BASE_DIR as ROOT
from project.urls import DatabaseURL
from tests.conftest import MYSQL, add_user

NOTES = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(200) NOT NULL UNIQUE)"


@pytest.fixture
def notes(app: Flask):  # type: ignore[no-untyped-def]
    with app.app_context():
        db.execute(NOTES)
    yield app


def test_rows_come_back_as_dicts_with_one_parameter_style(notes: Flask) -> None:
    with notes.app_context():
        db.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (1, "first"))
        db.execute(
            "INSERT INTO notes (id, body) VALUES (%(id)s, %(body)s)", {"id": 2, "body": "50%"}
        )
        assert db.fetch_one("SELECT id, body FROM notes WHERE id = %s", (1,)) == {
            "id": 1,
            "body": "first",
        }
        assert db.fetch_all("SELECT body FROM notes WHERE body LIKE '%%0%%' ORDER BY id") == [
            {"body": "50%"}
        ]
        assert db.fetch_one("SELECT body FROM notes WHERE id = %s", (99,)) is None
        assert db.fetch_value("SELECT COUNT(*) FROM notes") == 2


def test_parameters_are_never_spliced_into_sql(notes: Flask) -> None:
    hostile = "x'); DROP TABLE notes; --"
    with notes.app_context():
        db.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (1, hostile))
        assert db.fetch_value("SELECT body FROM notes WHERE body = %s", (hostile,)) == hostile
        assert db.fetch_value("SELECT COUNT(*) FROM notes") == 1


def test_execute_reports_rowcount_and_lastrowid(app: Flask) -> None:
    with app.app_context():
        user_id = add_user("bob")
        assert db.fetch_value("SELECT username FROM users WHERE id = %s", (user_id,)) == "bob"
        result = db.execute("UPDATE users SET is_admin = %s WHERE id = %s", (True, user_id))
        assert result.rowcount == 1


def test_a_transaction_commits_everything_or_nothing(notes: Flask) -> None:
    with notes.app_context():
        with pytest.raises(RuntimeError), db.transaction():
            db.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (1, "a"))
            db.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (2, "b"))
            raise RuntimeError("the view failed half-way")
        assert db.fetch_value("SELECT COUNT(*) FROM notes") == 0
        with db.transaction():
            db.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (1, "a"))
            with db.transaction():  # nested blocks join the outer one
                db.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (2, "b"))
        assert db.fetch_value("SELECT COUNT(*) FROM notes") == 2


def test_constraint_violations_raise_integrity_error_and_roll_back(notes: Flask) -> None:
    with notes.app_context():
        db.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (1, "same"))
        with pytest.raises(IntegrityError), db.transaction():
            db.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (2, "other"))
            db.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (3, "same"))
        assert db.fetch_all("SELECT id FROM notes") == [{"id": 1}]


def test_execute_many_inserts_all_rows_in_one_transaction(notes: Flask) -> None:
    with notes.app_context():
        rows = [(i, f"n{i}") for i in range(1, 51)]
        db.execute_many("INSERT INTO notes (id, body) VALUES (%s, %s)", rows)
        assert db.fetch_value("SELECT COUNT(*) FROM notes") == 50
        with pytest.raises(IntegrityError):
            db.execute_many(
                "INSERT INTO notes (id, body) VALUES (%s, %s)", [(100, "new"), (101, "n1")]
            )
        assert db.fetch_value("SELECT COUNT(*) FROM notes") == 50


@pytest.mark.parametrize("sql", ["SELECT %d", "SELECT %s, %s"])
def test_wrong_placeholders_raise_programming_error(app: Flask, sql: str) -> None:
    with app.app_context(), pytest.raises(ProgrammingError):
        db.fetch_one(sql, (1,))


def test_sqlite_paramstyle_translation() -> None:
    assert to_sqlite_paramstyle("a = %s AND b = %(name)s AND c LIKE '5%%'") == (
        "a = ? AND b = :name AND c LIKE '5%'"
    )


def test_pool_returns_every_connection_after_1000_requests(app: Flask) -> None:
    """No leak: ok, failing, and transaction-failing views all give their connection back."""
    client = app.test_client()
    paths = ["/_probe/row", "/_probe/boom", "/_probe/tx-boom", "/healthz"]
    for i in range(1000):
        response = client.get(paths[i % len(paths)])
        assert response.status_code in (200, 500)
    pool = db._pool
    assert pool is not None
    assert pool._connections == 0, "a connection was not returned to the pool"
    assert len(pool._idle_cache) <= app.config["DB_POOL_SIZE"]
    with app.app_context():  # and the failing transaction left nothing behind
        assert db.fetch_value("SELECT COUNT(*) FROM users WHERE username = %s", ("tx",)) == 0


def test_concurrent_requests_share_a_bounded_pool(app: Flask) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        client = app.test_client()
        try:
            for _ in range(50):
                assert client.get("/_probe/row").status_code == 200
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert db._pool is not None and db._pool._connections == 0


# -- MariaDB-only behaviour: lost connections -------------------------------


def connection_id() -> int:
    return int(db.fetch_value("SELECT CONNECTION_ID()"))


def kill(thread_id: int) -> None:
    admin = pymysql.connect(**MYSQL, autocommit=True)
    with admin.cursor() as cur:
        cur.execute("KILL %s", (thread_id,))
    admin.close()


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_a_killed_connection_mid_transaction_commits_nothing(notes: Flask) -> None:
    """The DBUtils hazard: a silent reconnect-and-retry would commit the second insert alone."""
    with notes.app_context(), pytest.raises(OperationalError), db.transaction():
        db.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (1, "first half"))
        kill(connection_id())
        db.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (2, "second half"))
    with notes.app_context():
        assert db.fetch_all("SELECT id FROM notes") == []


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_a_killed_idle_connection_is_replaced_on_the_next_request(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/_probe/row").status_code == 200
    with app.app_context():
        first = connection_id()
    kill(first)
    for _ in range(3):
        assert client.get("/_probe/row").status_code == 200
    with app.app_context():
        assert connection_id() != first


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_an_unreachable_server_is_reported_with_the_variable_name(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    # Port 1 on loopback: nothing listens there, so every connect is refused.
    db.configure(
        DatabaseURL.parse(f"mysql://root@127.0.0.1:1/{app.config['DATABASE'].name}", ROOT), 2
    )
    with app.app_context(), pytest.raises(OperationalError, match="DATABASE_URL: cannot connect"):
        db.fetch_one("SELECT 1")
    response = app.test_client().get("/_probe/row")
    assert response.status_code == 503
    assert "temporarily unavailable" in response.get_data(as_text=True)


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_a_request_that_only_reads_sends_no_rollback(app: Flask) -> None:
    """The pool rolls back only a connection returned inside begin(): reads cost no round trip more.

    ``Com_rollback`` is per connection, and one client in one thread keeps
    getting the same pooled connection back.
    """
    client = app.test_client()
    assert client.get("/_probe/row").status_code == 200

    def rollbacks() -> int:
        with app.app_context():
            row = db.fetch_one("SHOW SESSION STATUS LIKE 'Com_rollback'")
            assert row is not None
            return int(row["Value"])

    before = rollbacks()
    for _ in range(20):
        assert client.get("/_probe/row").status_code == 200
    assert rollbacks() == before
    assert client.get("/_probe/tx-boom").status_code == 500  # a transaction that raised
    assert rollbacks() > before  # ... was rolled back
    with app.app_context():
        assert db.fetch_value("SELECT COUNT(*) FROM users WHERE username = %s", ("tx",)) == 0


@pytest.mark.parametrize("stack", ["services"], indirect=True)
@pytest.mark.parametrize("idle", [0.0, PING_INTERVAL_S + 0.1])
def test_a_killed_idle_connection_is_replaced_before_a_transaction(
    notes: Flask, idle: float
) -> None:
    """A write right after its connection died (checked or not by the pool) still commits."""
    with notes.app_context():
        first = connection_id()
    kill(first)
    time.sleep(idle)
    with notes.app_context(), db.transaction():
        db.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (1, "after the kill"))
    with notes.app_context():
        assert db.fetch_all("SELECT body FROM notes") == [{"body": "after the kill"}]
        assert connection_id() != first
