"""Extensions, created unbound here and bound to the app in :func:`project.create_app`.

Apps import them from here (``from project.extensions import db``), never
from another app.
"""

from __future__ import annotations

import redis
from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_session import Session
from flask_wtf.csrf import CSRFProtect

from project.db import Database

db = Database()
csrf = CSRFProtect()
server_session = Session()
limiter = Limiter(key_func=get_remote_address, strategy="moving-window")


_READS = frozenset({"GET", "HEAD", "OPTIONS"})


@limiter.request_filter
def _reads_are_not_limited() -> bool:
    """Every limit here guards a POST (logins, registrations, reset emails): reads skip them.

    A limit on a read would need this filter, and :func:`_check_writes_only`, narrowed.
    """
    return request.method in _READS


def _check_writes_only(app: Flask) -> None:
    """Skip Flask-Limiter's before-request check for reads instead of running it to no end.

    Filtered out, the check still resolves the endpoint's limits and their
    exemptions before it finds none apply: 17 µs on every page view. Its hook
    is wrapped where Flask-Limiter registered it, so it keeps its place in the
    order.
    """
    hooks = app.before_request_funcs.setdefault(None, [])
    check = limiter._check_request_limit
    if check not in hooks:
        return  # already wrapped: this app was set up before
    position = hooks.index(check)

    def check_request_limit() -> None:
        if request.method not in _READS:
            check()

    hooks[position] = check_request_limit


def init_limiter(app: Flask) -> None:
    """Rate limits count in Redis when it is configured (shared by every worker), else in memory."""
    url = app.config.get("REDIS")
    app.config.setdefault("RATELIMIT_STORAGE_URI", url.url if url else "memory://")
    if url:  # every key under the project's prefix, as all our Redis keys are
        # The app's own pool (init_redis), which waits for a free connection: the
        # limiter's default pool raised at its 100th concurrent call, and under a
        # chat backlog that killed sockets. Call init_redis first.
        client: redis.Redis = app.extensions["redis"]
        app.config.setdefault(
            "RATELIMIT_STORAGE_OPTIONS",
            {
                "key_prefix": app.config["REDIS_KEY_PREFIX"] + "limits",
                "connection_pool": client.connection_pool,
            },
        )
    # Views that throttle set their own Retry-After; no X-RateLimit headers elsewhere.
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    limiter.init_app(app)
    _check_writes_only(app)


def init_redis(app: Flask) -> None:
    """Create the app's Redis client when ``REDIS_URL`` is set (None otherwise).

    The pool blocks: with every connection in use a caller waits up to
    ``REDIS_POOL_TIMEOUT`` seconds for one (redis-py's default pool raises at
    once, and thousands of sockets closing together lost their presence and
    session writes that way).
    """
    url = app.config.get("REDIS")
    if not url:
        app.extensions["redis"] = None
        return
    pool = redis.BlockingConnectionPool.from_url(
        url.url,
        max_connections=app.config["REDIS_MAX_CONNECTIONS"],
        timeout=app.config["REDIS_POOL_TIMEOUT"],
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
    )
    app.extensions["redis"] = redis.Redis.from_pool(pool)  # closing the client closes the pool


def get_redis() -> redis.Redis | None:
    """The current app's Redis client, or None on the embedded stack."""
    client: redis.Redis | None = current_app.extensions.get("redis")
    return client
