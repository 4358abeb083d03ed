"""Shared fixtures: real MariaDB and Redis, the embedded stack, apps and clients.

Every app-level test runs on both stacks from DESIGN.md:

* ``embedded``: SQLite + filesystem sessions (what a newcomer's first command uses)
* ``services``: MariaDB + Redis (what production uses)

A test needing a service that is not running is skipped with the reason, or
fails when ``REQUIRE_SERVICES=1`` (CI sets it), so CI can never go green by
skipping. Each test gets its own MariaDB database and its own Redis key
prefix, so runs never collide with each other or with a developer's data.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import jinja2
import jinja2.bccache
import pymysql
import pytest
import redis
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient

from apps.accounts.models import create_user
from apps.accounts.passwords import hash_password
from project import create_app
from project import migrations as project_migrations
from project.extensions import db
from project.settings import TestConfig
from tests.migrated import Templates
from tests.probe import probe

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
MYSQL = {
    "host": os.environ.get("TEST_MYSQL_HOST", "127.0.0.1"),
    "port": int(os.environ.get("TEST_MYSQL_PORT", "3306")),
    "user": os.environ.get("TEST_MYSQL_USER", "root"),
    "password": os.environ.get("TEST_MYSQL_PASSWORD", ""),
}
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def service_missing(what: str, error: BaseException) -> None:
    """Skip (or fail under REQUIRE_SERVICES=1) a test whose service is down."""
    message = f"{what} is not available ({error}); start it or unset REQUIRE_SERVICES"
    if REQUIRE_SERVICES:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def mysql_admin() -> pymysql.connections.Connection:
    """A root connection to the test MariaDB server, or a skip/fail."""
    try:
        # ssl_disabled: PyMySQL would otherwise build a TLS context, ~47 ms of CPU, per connect.
        return pymysql.connect(**MYSQL, connect_timeout=3, autocommit=True, ssl_disabled=True)
    except pymysql.err.MySQLError as exc:
        service_missing(f"MariaDB at {MYSQL['host']}:{MYSQL['port']}", exc)
        raise  # unreachable: service_missing always raises


def mysql_url(name: str) -> str:
    auth = MYSQL["user"] + (f":{MYSQL['password']}" if MYSQL["password"] else "")
    return f"mysql://{auth}@{MYSQL['host']}:{MYSQL['port']}/{name}"


@contextlib.contextmanager
def new_mysql_database(label: str = "test") -> Iterator[str]:
    """A new, empty MariaDB database, dropped on leaving. Yields its URL."""
    admin = mysql_admin()
    name = f"{label}_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield mysql_url(name)
    finally:
        db.close()  # release pooled connections before the drop
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@contextlib.contextmanager
def new_redis_prefix() -> Iterator[str]:
    """A Redis key prefix of its own; its keys are deleted on leaving."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_missing(f"Redis at {REDIS_URL}", exc)
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def mysql_database() -> Iterator[str]:
    """A new, empty MariaDB database for one test; dropped afterwards. Yields its URL."""
    with new_mysql_database() as url:
        yield url


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    """Each engine's schema, migrated once per run and copied into each test's database."""
    return Templates(tmp_path_factory.mktemp("templates"))


@pytest.fixture
def migrated_mysql_database(templates: Templates) -> Iterator[str]:
    """A new MariaDB database holding every migration, for one test; dropped afterwards."""
    with new_mysql_database() as url:
        templates.fill_mysql(url)
        yield url


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix for one test; its keys are deleted afterwards."""
    with new_redis_prefix() as prefix:
        yield prefix


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(params=["embedded", "services"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Settings overrides for one stack: SQLite + files, or MariaDB + Redis."""
    overrides: dict[str, Any] = {
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "MEDIA_ROOT": str(tmp_path / "media"),
    }
    if request.param == "embedded":
        templates = request.getfixturevalue("templates")
        overrides["DATABASE_URL"] = templates.copy_sqlite(tmp_path / "app.db")
        overrides["REDIS_URL"] = None
    else:
        overrides["DATABASE_URL"] = request.getfixturevalue("migrated_mysql_database")
        overrides["REDIS_URL"] = REDIS_URL
        overrides["REDIS_KEY_PREFIX"] = request.getfixturevalue("redis_prefix")
    overrides["STACK"] = request.param
    return overrides


class SharedBytecodeCache(jinja2.BytecodeCache):
    """Compiled templates, shared by every test app of the run.

    Each app has a Jinja environment of its own, which would parse and compile
    each template it renders again: about 80 ms of every test that renders pages.
    Jinja checks each template's source checksum on load, so an edited template
    is compiled anew.
    """

    def __init__(self) -> None:
        self._compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        compiled = self._compiled.get(bucket.key)
        if compiled is not None:
            bucket.bytecode_from_string(compiled)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._compiled[bucket.key] = bucket.bytecode_to_string()


COMPILED_TEMPLATES = SharedBytecodeCache()


@pytest.fixture
def make_app(stack: dict[str, Any], templates: Templates) -> Iterator[Any]:
    """Build migrated test apps on the current stack, with extra overrides."""
    created: list[Flask] = []

    def factory(env: str = "test", **extra: Any) -> Flask:
        app = create_app(env, overrides={**stack, **extra}, environ={})
        app.jinja_env.bytecode_cache = COMPILED_TEMPLATES
        app.register_blueprint(probe)
        if not templates.is_migrated(app):
            project_migrations.migrate(app)
        created.append(app)
        return app

    yield factory
    db.close()
    for app in created:
        if app.extensions.get("broker") is not None:
            app.extensions["broker"].close()
        if app.extensions.get("redis") is not None:
            app.extensions["redis"].close()


@pytest.fixture
def app(make_app: Any) -> Flask:
    return make_app()  # type: ignore[no-any-return]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def add_user(username: str = "alice", *, is_active: bool = True, is_admin: bool = False) -> int:
    """Insert a user row directly (the accounts app's forms come later); returns its id."""
    result = db.execute(
        "INSERT INTO users (username, username_key, email, password_hash, is_active, is_admin,"
        " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            username,
            username.lower(),
            f"{uuid.uuid4().hex}@example.com",
            "!",
            is_active,
            is_admin,
            "2026-11-21 12:00:00",
        ),
    )
    assert result.lastrowid
    return result.lastrowid


PASSWORD = "Correct-Horse-42"
#: PASSWORD hashed once at the test settings' argon2 cost, for tests that create many users.
PASSWORD_HASH = PasswordHasher(
    time_cost=TestConfig.ARGON2_TIME_COST,
    memory_cost=TestConfig.ARGON2_MEMORY_KIB,
    parallelism=TestConfig.ARGON2_PARALLELISM,
).hash(PASSWORD)


def create_account(
    username: str = "alice",
    password: str = PASSWORD,
    *,
    email: str | None = None,
    is_admin: bool = False,
) -> int:
    """Create a user through the accounts model, with a real argon2 hash; returns its id."""
    user = create_user(
        username,
        email or f"{username.lower()}@example.com",
        hash_password(password),
        is_admin=is_admin,
    )
    return user.id


def log_in(client: FlaskClient, login: str, password: str = PASSWORD, **extra: str) -> Any:
    """Submit the login form as a browser would (token from the page); returns the response."""
    token = csrf_token(client)
    return client.post(
        "/accounts/login", data={"csrf_token": token, "login": login, "password": password, **extra}
    )


def csrf_token(client: FlaskClient) -> str:
    """The CSRF token of the client's session, read from a page as a browser would."""
    page = client.get("/").get_data(as_text=True)
    match = CSRF_META.search(page)
    assert match, "the base layout must carry the CSRF token"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_in_thread(server: Any, name: str = "test-server") -> threading.Thread:
    """Run a socketserver-style *server* on a daemon thread.

    It polls for ``shutdown()`` every 50 ms, not the default 500 ms, which a
    test would otherwise wait out at each teardown.
    """
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
    )
    thread.start()
    return thread


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET to a live server, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def wait_for(url: str, seconds: float = 30) -> None:
    """Wait until a server started by a test answers at *url*."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            http_get(url)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds}s")


@dataclass
class Outbox:
    """Messages received by a real SMTP server (aiosmtpd) that a test started."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)

    @property
    def settings(self) -> dict[str, Any]:
        return {"MAIL_BACKEND": "smtp", "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": self.port}


@pytest.fixture
def smtp_outbox() -> Iterator[Outbox]:
    from aiosmtpd.controller import Controller

    outbox = Outbox(port=free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            outbox.messages.append(message_from_bytes(envelope.content, policy=default_policy))
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname="127.0.0.1", port=outbox.port)
    controller.start()
    yield outbox
    controller.stop()


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The test app served over HTTP (and WebSocket) by werkzeug in a thread."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = serve_in_thread(server)
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
