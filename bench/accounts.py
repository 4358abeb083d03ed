"""The accounts app under load: its pages against a minimal Flask app, and the admin user list.

One run, on MariaDB + Redis, with the production settings and the same
gunicorn settings (``-c gunicorn.conf.py``, same workers and threads) for
both apps:

1. **Throughput.** Two gunicorns are up at once, :mod:`bench.hello_app` and
   the project's ``project.wsgi:app``; the pages below take turns, for
   ``--rounds`` rounds, so that each ratio compares runs made a few seconds
   apart on the same machine. ``wrk`` (or the Python generator) loads each
   page for a warm-up and then ``--duration`` seconds at ``--connections``
   keep-alive connections:

   * ``GET /`` of the hello app (``Flask(__name__)`` and one route): the
     ceiling gunicorn + Flask give on this machine;
   * ``GET /accounts/login`` as an anonymous visitor: the page renders the
     login form; its CSRF token travels in a signed cookie, not a stored
     session, and the report counts the session keys the runs left in Redis
     (the goal is none);
   * ``GET /accounts/profile`` with the cookie of a session that logged in for
     real (a ``POST /accounts/login`` with the form's CSRF token), sent by
     every connection (``wrk -H 'Cookie: session=...'``).

   The report gives req/s, p50/p99, the ratio ours/hello for both pages, and
   (``--breakdown``) where one request's time goes, measured in this process
   with Flask's test client: templates, Redis round trips, SQL, the rest.

2. **Admin user list** (:mod:`bench.admin_list`): ``--users`` users (default
   100,000; the goal is stated at 1,000,000) are inserted, then each page of the
   list (first, filters, last, a date jump, searches, other sorts) and the
   dashboard are timed through gunicorn with an admin's session, next to
   ``listing.list_users()`` alone with every statement it sends and its plan.

Everything the benchmark makes is removed at the end, also on an error,
Ctrl-C or SIGTERM: both gunicorns are stopped, the database
``bench_accounts_<random>`` (migrated with ``project.migrations.migrate``) is
dropped, and every Redis key containing the run's ``REDIS_KEY_PREFIX``
(``bench_accounts_<random>:``: sessions, the session index, rate-limit
counters) is deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from unittest import mock

import jinja2
import pymysql.cursors
import pyotp
import redis
import redis.client
from flask import Flask
from flask.testing import FlaskClient

from bench import admin_browser, admin_list, hello_app
from bench._harness import (
    SESSION_COOKIE,
    LoadGenerator,
    LoadResult,
    add_common_arguments,
    bench_database,
    check_common_arguments,
    choose_wrk,
    cpu_seconds,
    descendants_cpu_seconds,
    describe_gunicorn,
    free_port,
    gunicorn_env,
    gunicorn_server,
    gunicorn_settings,
    load_notes,
    log,
    machine_busy_seconds,
    pids_named,
    request,
    results_table,
    run_main,
)
from bench._harness import log_in as harness_log_in
from project import ConfigurationError, create_app
from project.db import DatabaseError
from project.migrations import MigrationError, migrate

OURS = "project.wsgi:app"
HELLO = "bench.hello_app:app"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LOGIN = "/accounts/login"
PROFILE = "/accounts/profile"
USER_LIST = "/admin/accounts/"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench accounts",
        description="req/s of the login and profile pages against a minimal Flask app, "
        "and the admin user list's response times with many users.",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--users",
        type=int,
        default=100_000,
        help="users inserted for the admin user list (default 100000; 0 skips that part)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="times each page is loaded, taking turns with the others (default 2)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=20,
        help="sequential requests timed per admin page (default 20; the median is shown)",
    )
    parser.add_argument(
        "--breakdown",
        type=int,
        default=500,
        help="requests per page for the in-process time breakdown (default 500; 0 skips it)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help=f"Redis for sessions and limits (default: $BENCH_REDIS_URL or {DEFAULT_REDIS_URL})",
    )
    args = parser.parse_args(argv)
    check_common_arguments(parser, args)
    if args.users < 0:
        parser.error("--users must not be negative")
    if args.breakdown < 0:
        parser.error("--breakdown must not be negative")
    if args.rounds <= 0:
        parser.error("--rounds must be greater than zero")
    if args.samples <= 0:
        parser.error("--samples must be greater than zero")
    return args


# -- Redis -----------------------------------------------------------------------


def prefixed_keys(client: redis.Redis, prefix: str, kind: str = "") -> list[bytes]:
    """Every key containing ``prefix + kind`` (Flask-Limiter puts its own prefix before ours)."""
    return list(client.scan_iter(match=f"*{prefix}{kind}*", count=1000))


@contextlib.contextmanager
def redis_prefix(url: str) -> Iterator[tuple[redis.Redis, str]]:
    """A Redis client and a fresh key prefix; every key containing it is deleted at the end."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=30)
    prefix = f"bench_accounts_{secrets.token_hex(4)}:"
    client.ping()  # fail now, before anything is created, if Redis is not there
    try:
        yield client, prefix
    finally:
        keys = prefixed_keys(client, prefix)
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        log(f"deleted {len(keys):,} Redis keys containing {prefix}")
        client.close()


# -- the database and the accounts ---------------------------------------------------


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    is_admin: bool


def create_accounts(app: Flask, accounts: list[Account]) -> dict[str, str]:
    """Create the accounts the benchmark logs in with, as the app does (argon2 hash and all).

    Admins get a second factor, as production requires (``ADMIN_REQUIRE_2FA``),
    confirmed with the code of a minute ago; returns their TOTP secrets by username.
    """
    from apps.accounts import twofactor
    from apps.accounts.models import create_user
    from apps.accounts.passwords import hash_password

    secrets_by_user: dict[str, str] = {}
    with app.app_context():
        for account in accounts:
            user = create_user(
                account.username,
                f"{account.username}@bench.invalid",
                hash_password(account.password),
                is_admin=account.is_admin,
            )
            if account.is_admin:
                secret = twofactor.pending_secret(user.id)
                a_minute_ago = time.time() - 60
                assert twofactor.confirm(
                    user.id, pyotp.TOTP(secret).at(a_minute_ago), now=a_minute_ago
                )
                secrets_by_user[account.username] = secret
    return secrets_by_user


# -- logging in over HTTP ----------------------------------------------------------------


def log_in(port: int, account: Account, check_path: str, totp_secret: str | None = None) -> str:
    """Log in through the real form (and a code, given a TOTP secret); the session id.

    ``check_path`` must then answer 200, not a redirect to the login page.
    """
    code = pyotp.TOTP(totp_secret).now if totp_secret else None
    sid = harness_log_in(port, account.username, account.password, code)
    check = request(port, "GET", check_path, {"Cookie": f"{SESSION_COOKIE}={sid}"})
    if check.status != 200 or account.username.encode() not in check.body:
        raise RuntimeError(f"GET {check_path} after logging in: {check.status}")
    return sid


# -- where a page's time goes ------------------------------------------------------------


@dataclass(frozen=True)
class Breakdown:
    """Per request, in one thread of this process (Flask's test client, no HTTP, no gunicorn)."""

    label: str
    wall_ms: float
    cpu_ms: float
    cold_cpu_ms: float  # CPU with the caches flushed before each request, as under gunicorn
    render_ms: float  # jinja2 Template.render: the template, its macros, the form widgets
    redis_ms: float
    redis_calls: float
    sql_ms: float
    sql_calls: float


def _timed(func: Callable[..., Any], record: Callable[[float], None]) -> Callable[..., Any]:
    """``func``, passing the seconds each call took to ``record``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            record(time.perf_counter() - started)

    return wrapper


def breakdown(
    label: str, app: Flask, path: str, requests: int, headers: dict[str, str] | None = None
) -> Breakdown:
    """Time ``requests`` GETs of ``path``, and the part spent rendering, in Redis and in SQL.

    Redis and SQL times are round trips as the worker waits for them (the
    server's own work included); ``cpu_ms`` is this process's CPU time.
    """
    client = app.test_client(use_cookies=False)
    totals = dict.fromkeys(
        ("render", "render_calls", "redis", "redis_calls", "sql", "sql_calls"), 0.0
    )

    def add(key: str) -> Callable[[float], None]:
        def record(seconds: float) -> None:
            totals[key] += seconds
            totals[f"{key}_calls"] += 1

        return record

    patches = [
        (jinja2.Template, "render", "render"),
        (redis.Redis, "execute_command", "redis"),
        (redis.client.Pipeline, "execute", "redis"),
        (pymysql.cursors.Cursor, "execute", "sql"),
    ]
    with contextlib.ExitStack() as stack:
        for owner, name, key in patches:
            stack.enter_context(
                mock.patch.object(owner, name, _timed(getattr(owner, name), add(key)))
            )
        for _ in range(max(10, requests // 10)):  # warm-up: imports, caches, pool
            client.get(path, headers=headers)
        for key in totals:
            totals[key] = 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(requests):
            response = client.get(path, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"{label}: GET {path} answered {response.status_code}")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    per = 1000 / requests
    return Breakdown(
        label,
        wall * per,
        cpu * per,
        cold_cpu_ms(client, path, headers, max(10, requests // 5)),
        totals["render"] * per,
        totals["redis"] * per,
        totals["redis_calls"] / requests,
        totals["sql"] * per,
        totals["sql_calls"] / requests,
    )


def cold_cpu_ms(
    client: FlaskClient, path: str, headers: dict[str, str] | None, requests: int
) -> float:
    """CPU ms per GET of ``path`` when each starts with the CPU caches flushed.

    In this loop the page's code and data stay in the caches from one request to
    the next; in a gunicorn worker, wrk, the other workers and the master run
    in between. Walking 32 MiB before each request puts the page back in that
    state, so this figure compares with the gunicorn CPU per request above.
    """
    evict = bytearray(32 * 1024 * 1024)
    spent = 0.0
    for _ in range(requests):
        evict[::64] = bytes(len(evict) // 64)  # a write to every cache line
        started = time.process_time()
        client.get(path, headers=headers)
        spent += time.process_time() - started
    return spent * 1000 / requests


# -- the benchmark -------------------------------------------------------------------


@dataclass
class Report:
    settings: dict[str, Any]
    pool_size: int
    tool: str
    server_version: str
    redis_version: str
    rounds: dict[str, list[LoadResult]] = field(default_factory=dict)  # page -> one per round
    cpu: dict[str, list[CpuPerRequest]] = field(default_factory=dict)  # page -> one per round
    load_average: float = 0.0  # 1-minute load before the throughput runs: others' work
    login_sessions: int = 0  # Redis session keys the login-page runs left
    login_requests: int = 0  # requests the login-page runs were answered (warm-up included)
    session_key_bytes: int | None = None
    session_key_ttl: int | None = None
    breakdowns: list[Breakdown] | None = None
    users: int = 0
    insert_seconds: float = 0.0
    admin: list[admin_list.AdminPage] | None = None
    browser: list[admin_browser.BrowserPage] | str | None = None  # or why it did not run


def server_env(
    args: argparse.Namespace, database_url: str, prefix: str, port: int
) -> dict[str, str]:
    """Production settings with a random key, on the bench database, Redis and key prefix."""
    base = dict(os.environ)
    base.update(
        APP_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        DATABASE_URL=database_url,
        REDIS_URL=args.redis_url,
        REDIS_KEY_PREFIX=prefix,
    )
    return gunicorn_env(base, port, args.workers, args.threads)


@dataclass(frozen=True)
class CpuPerRequest:
    """CPU microseconds per answered request over one measured run, by who spent them."""

    gunicorn: float  # the master and its workers: HTTP parsing, the thread hand-off, the app
    services: float  # local mariadbd and redis-server
    machine: float  # every core on anything: the above, the load generator, the kernel

    @classmethod
    def between(cls, before: tuple[float, ...], after: tuple[float, ...], requests: int) -> Self:
        per = 1e6 / max(requests, 1)
        gunicorn, services, machine = ((b - a) * per for a, b in zip(before, after, strict=True))
        return cls(gunicorn, services, machine)


def cpu_now(server_pid: int) -> tuple[float, float, float]:
    """CPU seconds so far: gunicorn's processes, the local Redis and MariaDB, the machine."""
    return (
        cpu_seconds([server_pid]) + descendants_cpu_seconds(server_pid),
        cpu_seconds(pids_named("mariadbd", "redis-server")),
        machine_busy_seconds(),
    )


def measure_throughput(
    args: argparse.Namespace,
    loader: LoadGenerator,
    server_pid: int,
    port: int,
    name: str,
    path: str,
    headers: dict[str, str] | None = None,
) -> tuple[LoadResult, CpuPerRequest, int]:
    """Warm-up and measured run, with the CPU it cost; also how many requests the warm-up served."""
    warmed = 0
    if args.warmup:
        log(f"{name}: warm-up {args.warmup} s at {args.connections} connections")
        warmed = loader.load(port, path, args.warmup, headers).requests
    before = cpu_now(server_pid)
    result = loader.measure(name, port, path, 0, args.duration, headers)
    cpu = CpuPerRequest.between(before, cpu_now(server_pid), result.requests)
    return result, cpu, warmed


def run(args: argparse.Namespace, wrk: str | None) -> Report:
    """Set everything up, measure, tear everything down; the figures."""
    password = secrets.token_urlsafe(16)
    member = Account("benchmember", password, is_admin=False)
    admin = Account("benchadmin", password, is_admin=True)
    with (
        tempfile.TemporaryDirectory(prefix="bench_accounts_") as tmp,
        redis_prefix(args.redis_url) as (client, prefix),
        bench_database(args.mysql_url, "bench_accounts_") as database,
    ):
        tmpdir = Path(tmp)
        port = free_port()
        env = server_env(args, database.app_url, prefix, port)
        try:
            app = create_app(environ=env)
        except ConfigurationError as exc:
            raise RuntimeError(f"settings: {exc}") from None
        try:
            log(f"migrated {database.name}: {', '.join(migrate(app))}")
            totp = create_accounts(app, [member, admin])
            loader = LoadGenerator(wrk, tmpdir, args.connections)
            report = Report(
                settings=gunicorn_settings(env),
                pool_size=app.config["DB_POOL_SIZE"],
                tool=loader.tool,
                server_version=database.server_version,
                redis_version=str(client.info("server").get("redis_version", "?")),
            )
            report.load_average = os.getloadavg()[0]
            hello_port = free_port()
            hello_env = {**env, "GUNICORN_BIND": f"127.0.0.1:{hello_port}"}

            with gunicorn_server(OURS, env, port, tmpdir / "ours.log", "/healthz") as ours_pid:
                member_sid = log_in(port, member, PROFILE)
                admin_sid = log_in(port, admin, USER_LIST, totp[admin.username])
                cookie = {"Cookie": f"{SESSION_COOKIE}={member_sid}"}
                before = len(prefixed_keys(client, prefix, "session:"))
                # Both servers stay up, the pages take turns: each round sees the same machine.
                with gunicorn_server(
                    HELLO, hello_env, hello_port, tmpdir / "hello.log", "/"
                ) as hello_pid:
                    pages = [
                        ("hello", hello_pid, hello_port, "/", None),
                        ("login", ours_pid, port, LOGIN, None),
                        ("profile", ours_pid, port, PROFILE, cookie),
                    ]
                    for number in range(1, args.rounds + 1):
                        for key, pid, page_port, path, headers in pages:
                            name = f"{key} (round {number}/{args.rounds})"
                            result, cpu, warmed = measure_throughput(
                                args, loader, pid, page_port, name, path, headers
                            )
                            report.rounds.setdefault(key, []).append(result)
                            report.cpu.setdefault(key, []).append(cpu)
                            if key == "login":
                                report.login_requests += warmed + result.requests
                keys = prefixed_keys(client, prefix, "session:")
                report.login_sessions = len(keys) - before
                logged_in = (member_sid.encode(), admin_sid.encode())
                anonymous = [k for k in keys if not k.endswith(logged_in)]
                if anonymous:
                    report.session_key_bytes = client.memory_usage(anonymous[0])
                    report.session_key_ttl = int(client.ttl(anonymous[0]))
                if args.breakdown:
                    log(f"time breakdown: {args.breakdown} requests per page, in-process")
                    report.breakdowns = [
                        breakdown("hello: `GET /`", hello_app.app, "/", args.breakdown),
                        breakdown(f"ours: `GET {LOGIN}`", app, LOGIN, args.breakdown),
                        breakdown(f"ours: `GET {PROFILE}`", app, PROFILE, args.breakdown, cookie),
                    ]

                if args.users:
                    log(f"inserting {args.users:,} users")
                    report.users = args.users
                    report.insert_seconds = admin_list.insert_users(app, database, args.users)
                    log(f"inserted {args.users:,} users in {report.insert_seconds:.1f} s")
                    report.admin = admin_list.measure_admin_pages(
                        app,
                        port,
                        admin_sid,
                        args.samples,
                        "mariadb" in database.server_version.lower(),
                    )
                    report.browser = admin_browser.missing() or admin_browser.walk(
                        f"http://127.0.0.1:{port}",
                        admin.username,
                        admin.password,
                        totp[admin.username],
                        [(label, q) for label, q, _ in admin_list.admin_pages(admin_list.midway())],
                    )
        finally:
            app.extensions["db"].close()  # the pool's connections, before DROP DATABASE
    return report


PAGE_LABELS = {
    "hello": "hello: minimal Flask app, `GET /`",
    "login": f"ours: `GET {LOGIN}`, anonymous",
    "profile": f"ours: `GET {PROFILE}`, logged in",
}


def ratios(report: Report, page: str) -> str:
    """ours/hello per round (each against the hello run of the same round), and the median."""
    values = [
        ours.rps / hello.rps
        for ours, hello in zip(report.rounds[page], report.rounds["hello"], strict=True)
        if hello.rps
    ]
    if not values:
        return "n/a (hello served nothing)"
    text = f"**{statistics.median(values):.2f}x**"
    if len(values) > 1:
        text += f" (median; rounds: {', '.join(f'{v:.2f}x' for v in values)})"
    return text


def format_report(report: Report, args: argparse.Namespace) -> str:
    rows = []
    for page, label in PAGE_LABELS.items():
        for number, result in enumerate(report.rounds[page], start=1):
            suffix = f" (round {number})" if args.rounds > 1 else ""
            rows.append((label + suffix, result))
    lines = [
        f"{describe_gunicorn(report.settings)} for both apps, APP_ENV=production, "
        f"DB_POOL_SIZE={report.pool_size}; load: {report.tool}, {args.connections} connections, "
        f"{args.duration} s per page after {args.warmup} s warm-up, {args.rounds} round(s) "
        f"taking turns; server {report.server_version}, Redis {report.redis_version}; "
        f"{os.cpu_count()} cores, 1-minute load average {report.load_average:.1f} before the runs",
        "",
        *results_table(rows),
        "",
        f"ratio ours/hello (req/s): login page {ratios(report, 'login')}, "
        f"profile page {ratios(report, 'profile')}",
        "",
        f"The login-page runs (warm-ups included) were answered {report.login_requests:,} times "
        f"and left {report.login_sessions:,} new session keys in Redis"
        + (
            f"; each key is {report.session_key_bytes or 0:,} bytes (MEMORY USAGE) with a TTL"
            f" of {report.session_key_ttl or 0:,} s."
            if report.login_sessions
            else "."
        ),
        *load_notes(report.tool, [r for _, r in rows]),
        *format_cpu(report),
    ]
    if report.breakdowns:
        lines += format_breakdowns(report.breakdowns, args)
    if report.admin is not None:
        lines += admin_list.format_admin(
            report.admin, report.users, report.insert_seconds, args.samples
        )
    if report.browser is not None:
        lines += admin_browser.format_browser(report.browser)
    return "\n".join(lines)


def format_cpu(report: Report) -> list[str]:
    """Who spent the machine's CPU per request, and what that makes of the ratio."""
    lines = [
        "",
        "CPU per answered request, µs (median of the rounds): gunicorn is its master and "
        "workers (HTTP, the thread hand-off, the access log, the app); Redis + MariaDB the "
        "local servers; the rest is the load generator and the kernel's share outside them",
        "",
        "| page | machine | gunicorn | Redis + MariaDB | rest |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    medians: dict[str, CpuPerRequest] = {}
    for page, label in PAGE_LABELS.items():
        runs = report.cpu.get(page, [])
        if not runs:
            continue
        cpu = medians[page] = CpuPerRequest(
            statistics.median(r.gunicorn for r in runs),
            statistics.median(r.services for r in runs),
            statistics.median(r.machine for r in runs),
        )
        rest = cpu.machine - cpu.gunicorn - cpu.services
        lines.append(
            f"| {label} | {cpu.machine:,.0f} | {cpu.gunicorn:,.0f} | {cpu.services:,.0f} "
            f"| {rest:,.0f} |"
        )
    hello = medians.get("hello")
    if hello and hello.machine:
        bounds = [
            f"{page} {hello.machine / cpu.machine:.2f}x (its own work: "
            f"{cpu.gunicorn - hello.gunicorn:,.0f} µs in gunicorn + {cpu.services:,.0f} µs in "
            f"Redis and MariaDB)"
            for page, cpu in medians.items()
            if page != "hello" and cpu.machine
        ]
        lines += [
            "",
            "With the cores busy, req/s follows CPU per request: hello's machine CPU over "
            f"each page's gives {', '.join(bounds)}.",
        ]
    return lines


def format_breakdowns(breakdowns: list[Breakdown], args: argparse.Namespace) -> list[str]:
    lines = [
        "",
        f"Where the time goes: {args.breakdown} requests per page in one thread of the "
        "benchmark process (Flask test client: no HTTP, no gunicorn, no concurrency), "
        "ms per request; Redis and SQL are round trips, waited for, not CPU of this process",
        "",
        "| page | total | CPU | CPU, caches cold | templates | Redis (calls) "
        "| SQL (statements) | rest |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in breakdowns:
        rest = b.wall_ms - b.render_ms - b.redis_ms - b.sql_ms
        lines.append(
            f"| {b.label} | {b.wall_ms:.2f} | {b.cpu_ms:.2f} | {b.cold_cpu_ms:.2f} "
            f"| {b.render_ms:.2f} "
            f"| {b.redis_ms:.2f} ({b.redis_calls:g}) | {b.sql_ms:.2f} ({b.sql_calls:g}) "
            f"| {rest:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        report = run(args, choose_wrk(args))
        print(format_report(report, args))
        results = [r for runs in report.rounds.values() for r in runs]
        return 1 if any(r.errors for r in results) else 0

    return run_main(
        "accounts", body, (redis.RedisError, DatabaseError, MigrationError, ConfigurationError)
    )


if __name__ == "__main__":
    sys.exit(main())
