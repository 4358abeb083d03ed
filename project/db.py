"""The database layer: one small API over a DBUtils pool, on MySQL/MariaDB and SQLite.

App code writes SQL once, with PyMySQL's parameter style (``%s`` or
``%(name)s``, ``%%`` for a literal percent sign), and gets rows as dicts::

    from project.extensions import db

    user = db.fetch_one("SELECT * FROM users WHERE id = %s", (user_id,))
    with db.transaction():
        db.execute("UPDATE users SET email = %s WHERE id = %s", (email, user_id))
        db.execute("INSERT INTO audit_log (...) VALUES (...)", (...))

Each app context borrows at most one connection from the pool, lazily, and
gives it back at teardown, whether the view returned or raised.

Why every write runs inside an explicit ``begin()``: DBUtils' "tough"
connections transparently reconnect and retry a statement that failed on a
lost connection. Outside a transaction it knows about, that retry runs the
later statements on a fresh connection after the server has rolled back the
earlier ones, and the following commit then writes half a transaction.
Inside ``begin()`` DBUtils raises instead, and :meth:`Database.transaction`
rolls back and re-raises, so a lost connection never commits a partial write.

Exceptions, all from :class:`DatabaseError`::

    DatabaseError
     +-- IntegrityError      a constraint was violated (duplicate key, foreign key, NOT NULL)
     +-- OperationalError    the server is unreachable or the connection was lost
     +-- ProgrammingError    the SQL or its parameters are wrong
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors
from dbutils.pooled_db import PooledDB
from flask import Flask, g

from project.urls import DatabaseURL

log = logging.getLogger(__name__)

Params = Sequence[Any] | Mapping[str, Any]
Row = dict[str, Any]


class DatabaseError(Exception):
    """Base class of the errors this layer raises; the driver's error is the cause."""


class IntegrityError(DatabaseError):
    """A constraint was violated: duplicate key, foreign key, NOT NULL."""


class OperationalError(DatabaseError):
    """The server is unreachable, or the connection was lost mid-way."""


class ProgrammingError(DatabaseError):
    """The SQL is malformed or the parameters do not match it."""


_INTEGRITY = (sqlite3.IntegrityError, pymysql.err.IntegrityError)
_OPERATIONAL = (
    sqlite3.OperationalError,
    pymysql.err.OperationalError,
    pymysql.err.InterfaceError,
    pymysql.err.InternalError,
)
_PROGRAMMING = (
    sqlite3.ProgrammingError,
    pymysql.err.ProgrammingError,
    pymysql.err.DataError,
    pymysql.err.NotSupportedError,
    TypeError,  # PyMySQL: "not enough arguments for format string"
    KeyError,  # PyMySQL: a %(name)s with no such parameter
)


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Re-raise driver errors as this module's, whatever the engine."""
    try:
        yield
    except _INTEGRITY as exc:
        raise IntegrityError(str(exc)) from exc
    except _OPERATIONAL as exc:
        raise OperationalError(str(exc)) from exc
    except _PROGRAMMING as exc:
        raise ProgrammingError(str(exc)) from exc


@dataclass(frozen=True)
class Result:
    """What a write reports: rows touched and the id of an inserted row."""

    rowcount: int
    lastrowid: int | None


_PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?(.)", re.DOTALL)


@lru_cache(maxsize=1024)
def to_sqlite_paramstyle(sql: str) -> str:
    """Rewrite PyMySQL placeholders for sqlite3: ``%s`` to ``?``, ``%(n)s`` to ``:n``.

    Raises:
        ProgrammingError: for any other ``%`` sequence, as PyMySQL would.
    """

    def replace(match: re.Match[str]) -> str:
        name, kind = match.groups()
        if kind == "s":
            return f":{name}" if name else "?"
        if kind == "%" and not name:
            return "%"
        raise ProgrammingError(f"unsupported placeholder {match.group(0)!r} in SQL: use %s")

    return _PLACEHOLDER.sub(replace, sql)


def utcnow() -> datetime:
    """The current UTC time, naive, as both engines store it (MySQL runs with time_zone +00:00)."""
    return datetime.now(UTC).replace(tzinfo=None)


# Timestamps round-trip as datetime on SQLite as they do on MySQL. Registered
# explicitly: Python 3.12 deprecates sqlite3's implicit default converters.
sqlite3.register_adapter(datetime, lambda value: value.isoformat(" "))
sqlite3.register_converter("TIMESTAMP", lambda raw: datetime.fromisoformat(raw.decode()))


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


def connect_sqlite(database: str) -> sqlite3.Connection:
    """Open an SQLite connection the way the pool needs it.

    ``check_same_thread=False`` because the pool hands a connection to
    whichever thread asks next (never to two at once). Autocommit mode
    (``isolation_level=None``) so that transactions start only where
    :meth:`Database.transaction` says ``BEGIN``, as on MySQL.
    """
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(
        database,
        check_same_thread=False,
        isolation_level=None,
        timeout=30,
        detect_types=sqlite3.PARSE_DECLTYPES,
    )
    con.row_factory = _dict_row
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = NORMAL")
    return con


#: Statements run on every new MySQL connection.
MYSQL_SESSION_SETUP = ["SET time_zone = '+00:00'"]

#: A connection that answered within this many seconds is lent without asking again.
PING_INTERVAL_S = 1.0


def _ping_unless_recent(connection: Any) -> bool:
    """DBUtils' check of a connection leaving the pool, at most once a second per connection.

    A ping on every loan was a round trip on every request. A connection
    checked within the last second is lent as it is: if the server went away
    since, a read is retried on a new connection by DBUtils, and
    :meth:`Database.transaction` checks before its BEGIN (which is not retried).
    An exception here tells DBUtils the connection is dead; it opens a new one.
    """
    now = time.monotonic()
    if now - getattr(connection, "_checked_at", -PING_INTERVAL_S) < PING_INTERVAL_S:
        return True
    connection.ping(False)
    connection._checked_at = now
    return True


def mysql_connect_args(url: DatabaseURL) -> dict[str, Any]:
    """The ``pymysql.connect`` arguments for *url*, as the pool opens its connections."""
    options = dict(url.options)
    args: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.user,
        "password": url.password,
        "database": url.name,
        "unix_socket": options.get("unix_socket"),
        "charset": options.get("charset", "utf8mb4"),
        "connect_timeout": int(options.get("connect_timeout", 5)),
        "cursorclass": pymysql.cursors.DictCursor,
        "autocommit": True,  # reads see committed data; writes use begin()
    }
    # TLS is a deliberate choice: verified against ssl_ca when the URL names one,
    # off otherwise. PyMySQL's default ("preferred", unverified) costs ~35 ms of
    # CPU per connect for a certificate it never checks.
    if options.get("ssl_ca"):
        args.update(ssl_ca=options["ssl_ca"], ssl_verify_cert=True, ssl_verify_identity=True)
    else:
        args["ssl_disabled"] = True
    return args


class Database:
    """A pool of connections to one database and the API apps use on it."""

    def __init__(self) -> None:
        self.url: DatabaseURL | None = None
        self._pool: PooledDB | None = None

    def init_app(self, app: Flask) -> None:
        """Bind to the app's ``DATABASE``; connections are opened on first use."""
        self.configure(app.config["DATABASE"], app.config["DB_POOL_SIZE"])
        app.teardown_appcontext(self.release)
        app.extensions["db"] = self

    def configure(self, url: DatabaseURL, pool_size: int = 10) -> None:
        """Point this object at a database, closing any earlier pool."""
        self.close()
        self.url = url
        common: dict[str, Any] = {
            "mincached": 0,
            "maxcached": pool_size,
            "maxconnections": pool_size,
            "blocking": True,  # wait for a free connection rather than fail the request
            # Roll back a connection that comes back inside begin() (a view that
            # raised mid-transaction); other statements ran in autocommit, so the
            # ROLLBACK that "True" sent after every request had nothing to undo.
            "reset": False,
        }
        if url.engine == "sqlite":
            self._pool = PooledDB(connect_sqlite, database=url.path, ping=1, **common)
        else:
            self._pool = PooledDB(
                pymysql,
                setsession=MYSQL_SESSION_SETUP,
                ping=(1, _ping_unless_recent),  # when a connection leaves the pool
                **mysql_connect_args(url),
                **common,
            )

    @property
    def engine(self) -> str:
        return self._url().engine

    def _url(self) -> DatabaseURL:
        if self.url is None:
            raise RuntimeError("the database is not configured: call init_app() first")
        return self.url

    def close(self) -> None:
        """Close every pooled connection (tests and shutdown)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- connections ---------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        """Per-app-context state: the borrowed connection and transaction depth."""
        state = g.get("_db_state")
        if state is None or state["owner"] is not self:
            state = {"owner": self, "connection": None, "depth": 0}
            g._db_state = state
        return state

    def connection(self) -> Any:
        """The app context's connection, borrowed from the pool on first use.

        Raises:
            OperationalError: the server cannot be reached; the message names DATABASE_URL.
        """
        state = self._state()
        if state["connection"] is None:
            if self._pool is None:
                raise RuntimeError("the database is not configured: call init_app() first")
            try:
                state["connection"] = self._pool.connection()
            except (*_OPERATIONAL, OSError) as exc:
                raise OperationalError(
                    f"DATABASE_URL: cannot connect to {self._url().display}: {exc}"
                ) from exc
        return state["connection"]

    def release(self, exc: BaseException | None = None) -> None:
        """Give the connection back to the pool (rolled back if mid-transaction)."""
        state = g.pop("_db_state", None)
        if state and state["connection"] is not None:
            # The pool rolls back a connection returned inside begin(); closing a pooled
            # connection returns it rather than closing the socket.
            try:
                with _translated_errors():
                    state["connection"].close()
            except OperationalError as exc:
                # The server went away: the pool drops the dead connection. Raised
                # here (app-context teardown) it would replace the response with a 500.
                log.warning("dropped a database connection that was lost: %s", exc)

    # -- queries -------------------------------------------------------------

    def _prepare(self, sql: str, params: Params | None) -> tuple[str, Params]:
        params = () if params is None else params
        if self.engine == "sqlite":
            return to_sqlite_paramstyle(sql), params
        # Always pass parameters, even none, so "%%" means "%" on both engines.
        return sql, params

    def _run(self, sql: str, params: Params | None) -> Any:
        sql, params = self._prepare(sql, params)
        cursor = self.connection().cursor()
        with _translated_errors():
            try:
                cursor.execute(sql, params)
            except BaseException:
                cursor.close()
                raise
        return cursor

    def fetch_one(self, sql: str, params: Params | None = None) -> Row | None:
        """Run a query and return its first row as a dict, or ``None``."""
        cursor = self._run(sql, params)
        try:
            with _translated_errors():
                row = cursor.fetchone()
        finally:
            cursor.close()
        return dict(row) if row is not None else None

    def fetch_all(self, sql: str, params: Params | None = None) -> list[Row]:
        """Run a query and return all its rows as dicts."""
        cursor = self._run(sql, params)
        try:
            with _translated_errors():
                rows = cursor.fetchall()
        finally:
            cursor.close()
        return [dict(row) for row in rows]

    def fetch_value(self, sql: str, params: Params | None = None) -> Any:
        """Run a query and return the first column of its first row, or ``None``."""
        row = self.fetch_one(sql, params)
        return next(iter(row.values())) if row else None

    def execute(self, sql: str, params: Params | None = None) -> Result:
        """Run one write; it joins the open transaction or runs in its own."""
        with self.transaction():
            cursor = self._run(sql, params)
            try:
                return Result(cursor.rowcount, cursor.lastrowid)
            finally:
                cursor.close()

    def execute_many(self, sql: str, rows: Sequence[Params]) -> int:
        """Run one write for each parameter set, all in one transaction."""
        if not rows:
            return 0
        sql, _ = self._prepare(sql, rows[0])
        with self.transaction():
            cursor = self.connection().cursor()
            try:
                with _translated_errors():
                    cursor.executemany(sql, rows)
                return int(cursor.rowcount)
            finally:
                cursor.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one transaction: all of it is committed, or none.

        Nested blocks join the outermost one. A lost connection raises
        :class:`OperationalError` and nothing is committed.
        """
        state = self._state()
        if state["depth"]:
            state["depth"] += 1
            try:
                yield
            finally:
                state["depth"] -= 1
            return
        con = self.connection()
        with _translated_errors():
            if self.engine != "sqlite":
                # The pool checks a connection at most once a second, and BEGIN is not
                # retried: a statement first, which DBUtils retries on a new connection
                # if this one died since (nothing of the transaction is sent yet).
                check = con.cursor()
                check.execute("DO 1")
                check.close()
            con.begin()  # tells DBUtils not to reconnect-and-retry inside this block
            if self.engine == "sqlite":
                # IMMEDIATE takes the write lock now, not at the first write,
                # so two writers queue instead of failing with "database is locked".
                cursor = con.cursor()
                cursor.execute("BEGIN IMMEDIATE")
                cursor.close()
        state["depth"] = 1
        try:
            yield
        except BaseException:
            state["depth"] = 0
            try:
                with _translated_errors():
                    con.rollback()
            except OperationalError:
                pass  # the connection is gone, and the server rolled back with it
            raise
        state["depth"] = 0
        with _translated_errors():
            con.commit()

    def ping(self) -> None:
        """Run a trivial query; raises :class:`OperationalError` if the server is down."""
        self.fetch_value("SELECT 1")
