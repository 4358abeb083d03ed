"""Open sockets per user, across workers: a cap (429 past it) that heals when a worker dies."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.conftest import free_port
from tests.realtime.test_chat import login_cookie, receive
from tests.realtime.test_cluster import create_room
from tests.servers import Server, create_users, server_env, start_server

# make test-fast leaves these out: gunicorn clusters, workers killed: seconds each.
pytestmark = pytest.mark.slow


@pytest.fixture(params=["gthread", "gevent"])
def capped_server(
    request: pytest.FixtureRequest, tmp_path: Path, mysql_database: str, redis_prefix: str
) -> Iterator[Server]:
    env = server_env(
        request.param,
        tmp_path,
        mysql_database,
        redis_prefix,
        GUNICORN_WORKERS="2",
        WEBSOCKET_MAX_PER_USER="3",
        PRESENCE_TTL="3",
    )
    create_users(env, "alice", "bob")
    server = start_server(request.param, env, free_port())
    yield server
    server.stop()


def open_room(server: Server, cookie: str, sockets: ExitStack) -> ClientConnection:
    """A room socket of the user with *cookie*, closed when *sockets* closes."""
    ws = sockets.enter_context(
        connect(server.ws + "/ws/rooms/lobby", additional_headers={"Cookie": cookie})
    )
    receive(ws, "welcome")
    return ws


def refused_status(server: Server, cookie: str) -> int | None:
    try:
        with ExitStack() as sockets:
            open_room(server, cookie, sockets)
    except InvalidStatus as exc:
        return exc.response.status_code
    return None


def eventually_opens(
    server: Server, cookie: str, sockets: ExitStack, seconds: float
) -> ClientConnection:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return open_room(server, cookie, sockets)
        except InvalidStatus:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_user_past_the_socket_cap_gets_429_others_do_not(capped_server: Server) -> None:
    """Stops one account holding every thread: under gthread each socket holds one, and a free
    account could open sockets without end. Three per user here, counted across workers."""
    alice = login_cookie(capped_server.url, "alice")
    bob = login_cookie(capped_server.url, "bob")
    create_room(capped_server, alice)
    with ExitStack() as sockets:
        held = [open_room(capped_server, alice, sockets) for _ in range(3)]
        for _ in range(4):  # whichever worker takes the handshake
            assert refused_status(capped_server, alice) == 429
        other = open_room(capped_server, bob, sockets)
        other.send('{"type": "message", "body": "bob is not capped by alice"}')
        assert receive(other, "message")["body"] == "bob is not capped by alice"
        held[0].close()
        eventually_opens(capped_server, alice, sockets, 10)  # a closed socket gives its slot


def test_the_sockets_of_a_killed_worker_stop_counting(capped_server: Server) -> None:
    """A worker killed with SIGKILL never releases its slots: they lapse with its liveness key
    (PRESENCE_TTL, 3 s here), so the user is not locked out until a restart."""
    alice = login_cookie(capped_server.url, "alice")
    create_room(capped_server, alice)
    with ExitStack() as sockets:
        for _ in range(3):
            open_room(capped_server, alice, sockets)
        assert refused_status(capped_server, alice) == 429
        for pid in worker_pids(capped_server.proc.pid):
            os.kill(pid, signal.SIGKILL)  # gunicorn's master starts new ones
    with ExitStack() as sockets:
        for _ in range(3):
            eventually_opens(capped_server, alice, sockets, 30)


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]
