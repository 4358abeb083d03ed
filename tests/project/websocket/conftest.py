"""The app under each real server, with the echo socket and a 1 s keepalive."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.servers import Server, server_env, start_server


@pytest.fixture(params=["runserver", "gthread", "gevent"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    kind = request.param
    mysql_url = prefix = None
    if kind != "runserver":
        mysql_url = request.getfixturevalue("mysql_database")
        prefix = request.getfixturevalue("redis_prefix")
    started = start_server(
        kind,
        server_env(
            kind,
            tmp_path,
            mysql_url,
            prefix,
            WEBSOCKET_PING_INTERVAL="1",
            WEBSOCKET_PING_TIMEOUT="1",
        ),
        free_port(),
    )
    yield started
    started.stop()
