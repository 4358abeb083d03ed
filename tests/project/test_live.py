"""The personal channel ``ws /ws/me``: who may open it, who hears what, coalescing, revocation.

Each test runs on both stacks (in-process broker; Redis pub/sub), the app
served over real HTTP by werkzeug, with the ``websockets`` library as the page.
Events are raised with :mod:`project.live` itself, as an app raises them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import requests
from flask import Flask
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from project import live
from tests.conftest import create_account
from tests.realtime.test_chat import login_cookie

Open = Callable[..., ClientConnection]


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app(WEBSOCKET_MAX_PER_USER=3)
    with app.app_context():
        create_account("alice")
        create_account("bob")
    return app


@pytest.fixture
def cookies(live_server: str) -> dict[str, str]:
    return {name: login_cookie(live_server, name) for name in ("alice", "bob")}


@pytest.fixture
def open_me(live_server: str, cookies: dict[str, str]) -> Iterator[Open]:
    """``ws /ws/me`` of a user, listening once it returns (closed at the end of the test)."""
    with ExitStack() as sockets:

        def opener(username: str, cookie: str | None = None) -> ClientConnection:
            ws = sockets.enter_context(
                connect(
                    "ws" + live_server[4:] + "/ws/me",
                    additional_headers={"Cookie": cookie or cookies[username]},
                )
            )
            # The pong comes from the handler's read loop, which starts once it is subscribed.
            ws.ping().wait(5)
            return ws

        yield opener


def user_id(app: Flask, username: str) -> int:
    from project.extensions import db

    with app.app_context():
        return int(db.fetch_value("SELECT id FROM users WHERE username = %s", (username,)))


def events(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Every event *ws* gets within *seconds*."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            found.append(json.loads(ws.recv(timeout=left)))
        except TimeoutError:
            break
    return found


def next_event(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))  # type: ignore[no-any-return]


def test_an_anonymous_handshake_is_refused_before_any_upgrade(live_server: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect("ws" + live_server[4:] + "/ws/me")
    assert refused.value.response.status_code == 401


def test_a_plain_get_is_told_to_upgrade(live_server: str, cookies: dict[str, str]) -> None:
    answer = requests.get(live_server + "/ws/me", headers={"Cookie": cookies["alice"]}, timeout=10)
    assert answer.status_code == 426


def test_an_event_reaches_every_page_of_its_user_and_nobody_else(app: Flask, open_me: Open) -> None:
    first, second, bob = open_me("alice"), open_me("alice"), open_me("bob")
    with app.app_context():
        live.notify(user_id(app, "alice"), {"type": "transfer.failed", "upload": "x", "code": "c",
                                            "message": "for alice"})  # fmt: skip
        live.notify(user_id(app, "bob"), {"type": "transfer.failed", "upload": "y", "code": "c",
                                          "message": "for bob"})  # fmt: skip
    for page in (first, second):
        assert next_event(page)["message"] == "for alice"
        assert events(page, 0.5) == []  # bob's event never comes here
    assert next_event(bob)["message"] == "for bob"


def test_progress_is_coalesced_to_four_a_second_and_the_last_one_is_sent(
    app: Flask, open_me: Open
) -> None:
    """A fast upload reports its offset on every megabyte: the broker would carry thousands of
    events a second. At most 4 a second per upload go out, and the newest offset always does."""
    ws = open_me("alice")
    alice = user_id(app, "alice")
    started = time.monotonic()
    with app.app_context():
        offset = 0
        while time.monotonic() - started < 2.0:
            offset += 1
            live.progress(alice, "upload-1", {"type": "transfer.progress", "offset": offset})
            time.sleep(0.001)
    got = [e["offset"] for e in events(ws, 1.5)]
    assert got[-1] == offset  # the trailing event: the last offset is not lost
    assert got == sorted(got)
    assert 5 <= len(got) <= 4 * 2 + 2  # ~4 a second over 2 s, the first at once, plus the last


def test_progress_of_two_uploads_is_coalesced_apart(app: Flask, open_me: Open) -> None:
    ws = open_me("alice")
    alice = user_id(app, "alice")
    with app.app_context():
        for offset in range(1, 101):
            for key in ("a", "b"):
                live.progress(alice, key, {"type": "transfer.progress", "upload": key,
                                           "offset": offset})  # fmt: skip
    got = events(ws, 1.0)
    for key in ("a", "b"):
        offsets = [e["offset"] for e in got if e["upload"] == key]
        assert offsets == [1, 100]  # the first at once, the newest a quarter second on


def test_a_final_event_drops_the_progress_still_waiting(app: Flask, open_me: Open) -> None:
    """The last word on an upload (its completion) comes last: no stale offset after it."""
    ws = open_me("alice")
    alice = user_id(app, "alice")
    with app.app_context():
        live.progress(alice, "u", {"type": "transfer.progress", "offset": 1})
        live.progress(alice, "u", {"type": "transfer.progress", "offset": 2})  # held back
        live.notify(alice, {"type": "transfer.complete", "file": {"id": "u"}}, ends="u")
    assert [e["type"] for e in events(ws, 1.0)] == ["transfer.progress", "transfer.complete"]


def test_logging_out_sends_session_revoked_then_closes_1008(
    live_server: str, cookies: dict[str, str], open_me: Open
) -> None:
    ws = open_me("alice")
    bob = open_me("bob")
    http = requests.Session()
    http.headers["Cookie"] = cookies["alice"]
    page = http.get(live_server + "/", timeout=10).text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert token
    out = http.post(
        live_server + "/accounts/logout",
        data={"csrf_token": token.group(1)},
        allow_redirects=False,
        timeout=10,
    )
    assert out.status_code == 302
    event = next_event(ws)
    assert event["type"] == "session.revoked" and event["reason"]
    assert set(event) == {"type", "reason"}  # no session id or handle travels
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=5)
    assert ws.close_code == 1008
    bob.ping().wait(5)  # another user's socket stays open


def test_a_user_may_hold_only_websocket_max_per_user_sockets(
    open_me: Open, live_server: str, cookies: dict[str, str]
) -> None:
    for _ in range(3):
        open_me("alice")
    with pytest.raises(InvalidStatus) as refused:
        connect("ws" + live_server[4:] + "/ws/me", additional_headers={"Cookie": cookies["alice"]})
    assert refused.value.response.status_code == 429
    open_me("bob")  # the cap is per user


def stalled_socket(live_server: str, cookie: str) -> socket.socket:
    """A ``/ws/me`` socket whose page never reads: a 4 KiB receive window, never drained."""
    port = int(live_server.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/me HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Cookie: {cookie}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing past the headers is taken off the wire
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def test_a_page_that_never_reads_is_dropped_and_the_others_get_everything(
    app: Flask, live_server: str, cookies: dict[str, str], open_me: Open
) -> None:
    """WEBSOCKET_MAX_QUEUE holds for the live channel as for rooms: a stalled page is closed
    (1013, it reconnects) once that much waits for it; nobody else waits for it."""
    stalled = stalled_socket(live_server, cookies["alice"])
    reader = open_me("alice")
    alice = user_id(app, "alice")
    padding = "." * 1000
    with app.app_context():
        for i in range(3000):  # 3 MB, past the 1 MiB queue and any socket buffer
            live.notify(alice, {"type": "transfer.failed", "upload": str(i), "code": "c",
                                "message": padding})  # fmt: skip
    got = [next_event(reader, 10)["upload"] for _ in range(3000)]
    assert got == [str(i) for i in range(3000)]
    stalled.settimeout(10)
    ended = False
    try:
        while stalled.recv(65536):
            pass
        ended = True
    except ConnectionResetError:
        ended = True
    except TimeoutError:
        pass
    stalled.close()
    assert ended, "a page that never read was kept open"
