"""The admin user list at many users: each page's time through gunicorn, its SQL and plans.

Part of ``python -m bench accounts`` (``--users N``, default 100,000; the issue's
goal is at 1,000,000). Users are inserted with PyMySQL's ``executemany`` in
chunks (one argon2 hash for all); then, with an admin's session, each page below
is requested ``--samples`` times in a row through the project's gunicorn, and
``listing.list_users`` is run alone in this process with every statement it
sends recorded (time and MariaDB ``ANALYZE``: the plan plus the rows really read).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from unittest import mock

from flask import Flask

from bench._harness import SESSION_COOKIE, BenchDatabase, fmt_ms, log, request

USER_LIST = "/admin/accounts/"
DASHBOARD = "/admin/"
INSERT_CHUNK = 5000
CREATED_SPAN = timedelta(days=3 * 365)  # inserted users joined over the last three years
GOAL_MS = 50
EXPLAIN_COLUMNS = ("type", "key", "rows", "r_rows", "Extra")
SHOWN = re.compile(rb"<p class=\"muted\">((?:about )?[\d,]+) users?</p>")


def insert_users(app: Flask, database: BenchDatabase, count: int) -> float:
    """Insert ``count`` users ``user000001``... with one shared hash; returns the seconds taken.

    Every tenth user is deactivated, every thousandth an admin, a third have
    logged in; ``created_at`` grows with the id over :data:`CREATED_SPAN`, the
    way a table filled over years looks.
    """
    from apps.accounts.models import normalize_email, username_key
    from apps.accounts.passwords import hash_password

    with app.app_context():  # the argon2 cost comes from the app's settings
        password_hash = hash_password(secrets.token_urlsafe(16))  # one argon2 run, not a million
    width = max(6, len(str(count)))
    start = datetime.now(UTC).replace(tzinfo=None) - CREATED_SPAN
    step = CREATED_SPAN / max(count, 1)
    sql = (
        "INSERT INTO users (username, username_key, email, password_hash, is_active,"
        " is_admin, created_at, last_login_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )
    began = time.perf_counter()
    with contextlib.closing(database.connect()) as con:
        for first in range(1, count + 1, INSERT_CHUNK):
            rows = []
            for n in range(first, min(first + INSERT_CHUNK, count + 1)):
                name = f"user{n:0{width}d}"
                created = start + n * step
                last_login = created + timedelta(days=n % 30) if n % 3 == 0 else None
                rows.append(
                    (
                        name,
                        username_key(name),
                        normalize_email(f"{name}@example.com"),
                        password_hash,
                        n % 10 != 0,
                        n % 1000 == 0,
                        created,
                        last_login,
                    )
                )
            con.begin()
            with con.cursor() as cursor:
                cursor.executemany(sql, rows)
            con.commit()
        with con.cursor() as cursor:  # the statistics a table that grew slowly would have
            cursor.execute("ANALYZE TABLE users")
            cursor.fetchall()
    return time.perf_counter() - began


@dataclass(frozen=True)
class Statement:
    sql: str
    params: tuple[Any, ...]
    ms: list[float] = field(default_factory=list)
    plan: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class AdminPage:
    label: str
    shown: str  # the count the page shows ("about 1,000,000")
    http_ms: list[float]
    list_ms: list[float]  # listing.list_users alone, in this process
    statements: list[Statement]


def midway() -> str:
    """A join date halfway through the inserted users' span, for the jump to a date."""
    return (datetime.now(UTC) - CREATED_SPAN / 2).date().isoformat()


def admin_pages(joined: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, query string, the ``UserQuery`` fields the view builds from it)."""
    return [
        ("first page (newest)", "", {}),
        ("filter `active=no`", "?active=no", {"active": False}),
        ("filter `admin=yes`", "?admin=yes", {"admin": True}),
        ("last page (oldest)", "?page=last", {"last": True}),
        (f"jump `joined={joined}`", f"?joined={joined}", {"joined": date.fromisoformat(joined)}),
        ("search `q=user0999` (few)", "?q=user0999", {"search": "user0999"}),
        ("search `q=user` (all)", "?q=user", {"search": "user"}),
        ("search `q=user000` (1 %)", "?q=user000", {"search": "user000"}),
        ("search `q=user00` (10 %)", "?q=user00", {"search": "user00"}),
        (
            "search `q=user00`, `active=no`, by username",
            "?q=user00&active=no&sort=username",
            {"search": "user00", "active": False, "sort": "username"},
        ),  # fmt: skip
        (
            "sort username, last page",
            "?sort=username&dir=asc&page=last",
            {"sort": "username", "descending": False, "last": True},
        ),  # fmt: skip
        ("sort last login", "?sort=last_login", {"sort": "last_login"}),
    ]


def time_http(port: int, path: str, sid: str, samples: int) -> tuple[list[float], bytes]:
    """``samples`` sequential GETs on one keep-alive connection (after one unmeasured)."""
    headers = {"Cookie": f"{SESSION_COOKIE}={sid}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times: list[float] = []
    try:
        body = b""
        for i in range(samples + 1):
            started = time.perf_counter()
            response = request(port, "GET", path, headers, conn=conn)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status != 200:
                raise RuntimeError(f"GET {path} as admin: {response.status}")
            body = response.body
            if i:
                times.append(elapsed)
        return times, body
    finally:
        conn.close()


def time_list_users(
    app: Flask, fields: dict[str, Any], samples: int, mariadb: bool
) -> tuple[list[float], list[Statement]]:
    """``samples`` timed calls of ``list_users``; each statement it sends, timed and planned."""
    from apps.accounts.admin import PER_PAGE
    from apps.accounts.listing import UserQuery, list_users
    from project.extensions import db

    query = UserQuery(per_page=PER_PAGE, **fields)
    statements: dict[tuple[str, tuple[Any, ...]], Statement] = {}
    real = {"fetch_all": db.fetch_all, "fetch_value": db.fetch_value}

    def recording(name: str) -> Callable[..., Any]:
        def run(sql: str, params: Any = None) -> Any:
            key = (sql, tuple(params or ()))
            started = time.perf_counter()
            try:
                return real[name](sql, params)
            finally:
                statement = statements.setdefault(key, Statement(sql, key[1]))
                statement.ms.append((time.perf_counter() - started) * 1000)

        return run

    times: list[float] = []
    with app.app_context():
        list_users(query)  # warm: the pool's connection, the statements' first plans
        with (
            mock.patch.object(db, "fetch_all", recording("fetch_all")),
            mock.patch.object(db, "fetch_value", recording("fetch_value")),
        ):
            for _ in range(samples):
                started = time.perf_counter()
                list_users(query)
                times.append((time.perf_counter() - started) * 1000)
        for statement in statements.values():
            if not statement.sql.startswith("EXPLAIN"):
                keyword = "ANALYZE" if mariadb else "EXPLAIN"
                statement.plan.extend(db.fetch_all(f"{keyword} {statement.sql}", statement.params))
    return times, list(statements.values())


def measure_admin_pages(
    app: Flask, port: int, sid: str, samples: int, mariadb: bool
) -> list[AdminPage]:
    """Every page of :func:`admin_pages`, and the dashboard, through gunicorn and alone."""
    pages = []
    for label, query_string, fields in admin_pages(midway()):
        log(f"admin user list, {label}: {samples} requests")
        http_ms, body = time_http(port, USER_LIST + query_string, sid, samples)
        found = SHOWN.search(body)
        rows = body.count(b'name="user_ids"')
        shown = f"{found.group(1).decode() if found else '?'} ({rows} rows)"
        list_ms, statements = time_list_users(app, fields, samples, mariadb)
        pages.append(AdminPage(label, shown, http_ms, list_ms, statements))
    log(f"admin dashboard: {samples} requests")
    http_ms, _ = time_http(port, DASHBOARD, sid, samples)
    pages.append(AdminPage("dashboard `/admin/`", "", http_ms, [], []))
    return pages


def _spread(values: list[float]) -> str:
    if not values:
        return ""
    low, high = fmt_ms(min(values)), fmt_ms(max(values))
    return f"{fmt_ms(statistics.median(values))} ({low}-{high})"


def format_admin(
    pages: list[AdminPage], users: int, insert_seconds: float, samples: int
) -> list[str]:
    lines = [
        "",
        f"Admin user list, `{USER_LIST}`, at {users:,} users (inserted in "
        f"{insert_seconds:.1f} s) plus the 2 benchmark accounts; goal: each page <= {GOAL_MS} ms. "
        f"Median (min-max) of {samples} sequential requests through gunicorn, and of "
        "`listing.list_users()` alone in the benchmark process, with the median of each "
        "statement it sends",
        "",
        "| page | shown | through gunicorn, ms | `list_users()`, ms | statements, ms each |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for page in pages:
        each = ", ".join(
            f"{s.sql.split()[0]} {fmt_ms(statistics.median(s.ms))}" for s in page.statements
        )
        lines.append(
            f"| {page.label} | {page.shown} | {_spread(page.http_ms)} "
            f"| {_spread(page.list_ms)} | {each} |"
        )
    lines += [
        "",
        "Plans (MariaDB `ANALYZE`: r_rows is the rows really read):",
        "",
        "| page | statement | " + " | ".join(EXPLAIN_COLUMNS) + " |",
        "| --- | --- |" + " --- |" * len(EXPLAIN_COLUMNS),
    ]
    for page in pages:
        for statement in page.statements:
            for row in statement.plan:
                cells = [str(row.get(c)) if row.get(c) is not None else "" for c in EXPLAIN_COLUMNS]
                what = " ".join(statement.sql.split()[:1] + ["..."] + statement.sql.split()[-6:])
                lines.append(f"| {page.label} | `{what}` | " + " | ".join(cells) + " |")
    return lines
