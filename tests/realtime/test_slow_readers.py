"""A room with sockets that never read: nobody else in the room waits for them.

Real gunicorn (gthread and gevent, one worker so every socket shares one
fan-out), MariaDB and Redis; the slow sockets are raw sockets with a tiny
receive window that never call recv().
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import free_port
from tests.realtime.test_chat import login_cookie, receive
from tests.realtime.test_cluster import create_room
from tests.servers import Server, create_users, server_env, start_server

# make test-fast leaves these out: gunicorn clusters and peers that never read: seconds each.
pytestmark = pytest.mark.slow

MESSAGES = 2500
PADDING = "." * 1500  # 2,500 messages of 1.5 KB: 4 MB for each stalled socket, past any buffer


@pytest.fixture(params=["gthread", "gevent"])
def chat_server(
    request: pytest.FixtureRequest, tmp_path: Path, mysql_database: str, redis_prefix: str
) -> Iterator[Server]:
    env = server_env(
        request.param,
        tmp_path,
        mysql_database,
        redis_prefix,
        GUNICORN_WORKERS="1",
        CHAT_RATE_LIMIT="100000 per 10 seconds",
        WEBSOCKET_MAX_QUEUE="262144",
        WEBSOCKET_PING_INTERVAL="120",  # the old fan-out waited this long on each slow socket
    )
    create_users(env, "alice", "bob", "carol")
    server = start_server(request.param, env, free_port())
    yield server
    server.stop()


def stalled_socket(server: Server, cookie: str) -> socket.socket:
    """A room socket whose owner never reads: a 4 KiB receive window, never drained."""
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/rooms/lobby HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Cookie: {cookie}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing past the headers is taken off the wire
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def test_sockets_that_never_read_do_not_stall_the_room(chat_server: Server) -> None:
    """Stops one slow reader stalling a room: three sockets that never read, in a room where
    another user posts 2,500 messages, made the healthy reader wait (974 of them arrived,
    the last ones seconds late). Each socket now has its own bounded queue and writer; the
    stalled ones are dropped past WEBSOCKET_MAX_QUEUE, everyone else gets every message."""
    alice, bob, carol = (login_cookie(chat_server.url, name) for name in ("alice", "bob", "carol"))
    create_room(chat_server, alice)
    stalled = [stalled_socket(chat_server, carol) for _ in range(3)]
    headers = {"Cookie": bob}
    lobby = chat_server.ws + "/ws/rooms/lobby"
    with connect(lobby, additional_headers=headers, max_queue=None) as reader:
        receive(reader, "welcome")
        # The writer's client reads its own echoes in the background (unbounded queue).
        with connect(lobby, additional_headers={"Cookie": alice}, max_queue=None) as writer:
            receive(writer, "welcome")
            for i in range(MESSAGES):
                writer.send(
                    json.dumps({"type": "message", "body": f"m{i}{PADDING}", "client_id": str(i)})
                )
            seen: list[str] = []
            deadline = time.monotonic() + 60
            while len(seen) < MESSAGES and time.monotonic() < deadline:
                frame = json.loads(reader.recv(timeout=max(0.1, deadline - time.monotonic())))
                if frame["type"] == "message":
                    seen.append(frame["body"])
    assert seen == [f"m{i}{PADDING}" for i in range(MESSAGES)]
    for sock in stalled:  # each was dropped: reading it now ends, it does not go on for ever
        sock.settimeout(10)
        ended = False
        try:
            while sock.recv(65536):
                pass
            ended = True
        except ConnectionResetError:
            ended = True
        except TimeoutError:
            pass
        sock.close()
        assert ended, "a socket that never read was kept open"
