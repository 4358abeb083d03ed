"""The extensions as bound by the factory: the Redis client's pool waits instead of failing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis
from flask import Flask


@pytest.fixture
def redis_app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app(REDIS_MAX_CONNECTIONS=2, REDIS_POOL_TIMEOUT=0.5)
    if app.extensions["redis"] is None:
        pytest.skip("the embedded stack has no Redis client")
    return app


def test_the_redis_pool_is_bounded_by_the_settings(redis_app: Flask) -> None:
    pool = redis_app.extensions["redis"].connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.max_connections == 2
    assert pool.timeout == 0.5


def test_a_caller_waits_for_a_free_connection_instead_of_failing(redis_app: Flask) -> None:
    client: redis.Redis = redis_app.extensions["redis"]
    pool = client.connection_pool
    held = [pool.get_connection(), pool.get_connection()]
    release = threading.Timer(0.2, pool.release, [held.pop()])
    release.start()
    started = time.monotonic()
    assert client.ping()  # waited for the released connection
    assert 0.1 < time.monotonic() - started < 0.5
    release.join()
    pool.release(held.pop())


def test_a_caller_gives_up_after_the_pool_timeout(redis_app: Flask) -> None:
    pool = redis_app.extensions["redis"].connection_pool
    held = [pool.get_connection(), pool.get_connection()]
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        redis_app.extensions["redis"].ping()
    assert time.monotonic() - started >= 0.45
    for connection in held:
        pool.release(connection)
