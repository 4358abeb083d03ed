"""Chat rooms end to end: pages, the room socket's JSON protocol, history, presence, limits.

Each test runs on both stacks (SQLite + in-process broker; MariaDB + Redis),
served over real HTTP by werkzeug, with the `websockets` library as client.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import requests
from flask import Flask
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from apps.realtime import models
from project.extensions import db
from tests.conftest import PASSWORD, create_account

Join = Callable[..., ClientConnection]


def login_cookie(base: str, username: str) -> str:
    """Log in through the real form; returns the Cookie header a socket sends.

    The cookie is carried by hand: in production it is marked Secure, and a
    cookie jar would not send it back over the plain HTTP of these tests.
    """
    page = requests.get(base + "/accounts/login", timeout=10)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
    assert token
    response = requests.post(
        base + "/accounts/login",
        allow_redirects=False,
        timeout=10,
        headers={"Cookie": f"csrf={page.cookies['csrf']}"},  # a visitor's CSRF secret
        data={"csrf_token": token.group(1), "login": username, "password": PASSWORD},
    )
    assert response.status_code == 302, response.text
    return f"session={response.cookies['session']}"


def receive(ws: ClientConnection, kind: str, timeout: float = 5) -> dict[str, Any]:
    """The next JSON frame of *kind*, skipping others (presence updates arrive any time)."""
    while True:
        data = json.loads(ws.recv(timeout=timeout))
        if data["type"] == kind:
            return data  # type: ignore[no-any-return]


def wait_online(
    ws: ClientConnection, online: list[str], expected: list[str], timeout: float = 5
) -> list[str]:
    """Apply *ws*'s presence deltas to *online* (as the page does) until it is *expected*."""
    names = set(online)
    while sorted(names) != expected:
        frame = receive(ws, "presence", timeout=timeout)
        names = (names | set(frame["joined"])) - set(frame["left"])
    return sorted(names)


@pytest.fixture
def chat_app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app(
        CHAT_RATE_LIMIT="1000 per minute", CHAT_MESSAGE_MAX_LENGTH=100, PRESENCE_INTERVAL=0.1
    )
    with app.app_context():
        alice = create_account("alice")
        create_account("bob")
        models.create_room("general", alice)
    return app


@pytest.fixture
def app(chat_app: Flask) -> Flask:
    return chat_app  # live_server serves this app


@pytest.fixture
def join(live_server: str) -> Join:
    cookies: dict[str, str] = {}

    def open_socket(username: str, room: str = "general", query: str = "") -> ClientConnection:
        if username not in cookies:
            cookies[username] = login_cookie(live_server, username)
        url = "ws" + live_server[4:] + f"/ws/rooms/{room}" + query
        return connect(url, additional_headers={"Cookie": cookies[username]})

    return open_socket


def test_only_logged_in_users_may_open_a_room_socket(live_server: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect("ws" + live_server[4:] + "/ws/rooms/general")
    assert refused.value.response.status_code == 401


def test_an_unknown_room_is_404(join: Join) -> None:
    with pytest.raises(InvalidStatus) as refused:
        join("alice", room="nowhere")
    assert refused.value.response.status_code == 404


def test_two_users_chat_and_messages_are_stored(chat_app: Flask, join: Join) -> None:
    with join("alice") as alice, join("bob") as bob:
        welcome = receive(alice, "welcome")
        assert welcome["room"] == "general" and welcome["user"] == "alice"
        assert welcome["messages"] == []
        receive(bob, "welcome")
        alice.send(json.dumps({"type": "message", "body": "  hi bob <b>!</b> ", "client_id": "c1"}))
        for ws in (alice, bob):
            message = receive(ws, "message")
            assert message["user"] == "alice"
            assert message["body"] == "hi bob <b>!</b>"  # stored as text; pages insert it as text
            assert message["client_id"] == "c1"
            assert message["sent_at"].endswith("Z")
        bob.send(json.dumps({"type": "message", "body": "hello alice"}))
        assert receive(alice, "message")["body"] == "hello alice"
    with chat_app.app_context():
        room = models.get_room("general")
        assert room is not None
        stored = models.recent_messages(room.id, 10)
        assert [(m.username, m.body) for m in stored] == [
            ("alice", "hi bob <b>!</b>"),
            ("bob", "hello alice"),
        ]


def test_joining_sends_the_last_50_and_older_ones_on_request(chat_app: Flask, join: Join) -> None:
    with chat_app.app_context():
        room = models.get_room("general")
        assert room is not None
        for i in range(60):
            models.add_message(room.id, 1, "alice", f"old {i}")
    with join("bob") as bob:
        welcome = receive(bob, "welcome")
        bodies = [m["body"] for m in welcome["messages"]]
        assert bodies == [f"old {i}" for i in range(10, 60)]
        assert welcome["has_more"] is True
        bob.send(json.dumps({"type": "history", "before": welcome["messages"][0]["id"]}))
        older = receive(bob, "history")
        assert [m["body"] for m in older["messages"]] == [f"old {i}" for i in range(10)]
        assert older["has_more"] is False


def test_a_reconnecting_client_gets_what_it_missed(chat_app: Flask, join: Join) -> None:
    with join("alice") as alice:
        receive(alice, "welcome")
        alice.send(json.dumps({"type": "message", "body": "before"}))
        last_seen = receive(alice, "message")["id"]
    with join("bob") as bob:
        receive(bob, "welcome")
        for body in ("missed 1", "missed 2"):
            bob.send(json.dumps({"type": "message", "body": body}))
    with join("alice", query=f"?after={last_seen}") as alice:
        welcome = receive(alice, "welcome")
        assert [m["body"] for m in welcome["messages"]] == ["missed 1", "missed 2"]


def test_who_is_online_follows_joins_and_leaves(join: Join) -> None:
    with join("alice") as alice:
        online = receive(alice, "welcome")["online"]
        assert online == ["alice"]
        with join("bob") as bob:
            assert receive(bob, "welcome")["online"] == ["alice", "bob"]
            online = wait_online(alice, online, ["alice", "bob"])
        wait_online(alice, online, ["alice"])


def test_a_second_socket_of_an_online_user_sends_no_presence(join: Join) -> None:
    with join("alice") as alice:
        online = receive(alice, "welcome")["online"]
        with join("bob") as bob:
            receive(bob, "welcome")
            online = wait_online(alice, online, ["alice", "bob"])
            with join("bob") as second_tab:
                assert receive(second_tab, "welcome")["online"] == ["alice", "bob"]
            with pytest.raises(TimeoutError):  # bob never left: nothing to tell alice
                receive(alice, "presence", timeout=0.5)
        assert receive(alice, "presence") == {"type": "presence", "joined": [], "left": ["bob"]}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_request"),
        ("[1, 2]", "bad_request"),
        (json.dumps({"type": "dance"}), "bad_request"),
        (json.dumps({"type": "message"}), "bad_request"),
        (json.dumps({"type": "message", "body": "   "}), "bad_request"),
        (json.dumps({"type": "message", "body": 42}), "bad_request"),
        (json.dumps({"type": "message", "body": "x" * 101}), "too_long"),
        (json.dumps({"type": "history", "before": "yesterday"}), "bad_request"),
    ],
)
def test_bad_frames_get_an_error_and_the_socket_stays_open(
    chat_app: Flask, join: Join, frame: str, code: str
) -> None:
    with join("alice") as alice:
        receive(alice, "welcome")
        alice.send(frame)
        assert receive(alice, "error")["code"] == code
        alice.send(b"\x00binary")
        assert receive(alice, "error")["code"] == "bad_request"
        alice.send(json.dumps({"type": "message", "body": "still fine"}))
        assert receive(alice, "message")["body"] == "still fine"
    with chat_app.app_context():
        room = models.get_room("general")
        assert room is not None
        assert [m.body for m in models.recent_messages(room.id, 10)] == ["still fine"]


def test_a_resend_with_the_same_client_id_is_stored_once_and_announced_again(
    chat_app: Flask, join: Join
) -> None:
    """A client whose socket dropped before the echo resends: nobody sees the message twice."""
    with join("alice") as alice, join("bob") as bob:
        receive(alice, "welcome")
        receive(bob, "welcome")
        frame = json.dumps({"type": "message", "body": "only once", "client_id": "u-1"})
        alice.send(frame)
        first = receive(bob, "message")
        alice.send(frame)
        again = receive(bob, "message")  # the first announcement may be what was lost
        assert again == first
    with chat_app.app_context():
        room = models.get_room("general")
        assert room is not None
        assert [m.body for m in models.recent_messages(room.id, 10)] == ["only once"]
        owner = db.fetch_one("SELECT id FROM users WHERE username = %s", ("alice",))
        assert owner is not None
        models.create_room("other", owner["id"])
    with join("alice", room="other") as elsewhere:
        receive(elsewhere, "welcome")
        elsewhere.send(frame)  # a name already used in another room: refused, nothing leaks
        refused = receive(elsewhere, "error")
        assert (refused["code"], refused["client_id"]) == ("bad_request", "u-1")
        elsewhere.send(json.dumps({"type": "message", "body": "x", "client_id": "y" * 65}))
        assert receive(elsewhere, "error")["code"] == "bad_request"


def test_messages_are_rate_limited_per_user(
    make_app: Callable[..., Flask], live_server: str, chat_app: Flask
) -> None:
    chat_app.config["CHAT_RATE_LIMIT"] = "3 per 30 seconds"
    cookie = login_cookie(live_server, "alice")
    with connect(
        "ws" + live_server[4:] + "/ws/rooms/general", additional_headers={"Cookie": cookie}
    ) as alice:
        receive(alice, "welcome")
        for i in range(3):
            alice.send(json.dumps({"type": "message", "body": f"m{i}"}))
            receive(alice, "message")
        alice.send(json.dumps({"type": "message", "body": "one too many", "client_id": "x"}))
        error = receive(alice, "error")
        assert error["code"] == "rate_limited" and error["client_id"] == "x"
        assert 1 <= error["retry_after"] <= 31


def test_history_requests_count_against_the_chat_limit(chat_app: Flask, join: Join) -> None:
    """Stops a history flood: each 40-byte request costs a query and returns up to
    CHAT_HISTORY messages, and none was limited. They now share CHAT_RATE_LIMIT."""
    chat_app.config["CHAT_RATE_LIMIT"] = "3 per 30 seconds"
    with join("alice") as alice:
        receive(alice, "welcome")
        for _ in range(3):
            alice.send(json.dumps({"type": "history", "before": 10**9}))
            receive(alice, "history")
        alice.send(json.dumps({"type": "history", "before": 10**9}))
        error = receive(alice, "error")
        assert error["code"] == "rate_limited" and 1 <= error["retry_after"] <= 31
        alice.send(json.dumps({"type": "message", "body": "and posting is over too"}))
        assert receive(alice, "error")["code"] == "rate_limited"


# -- the pages ----------------------------------------------------------------------------------


def test_the_room_list_and_room_pages(chat_app: Flask) -> None:
    client = chat_app.test_client()
    assert client.get("/realtime/").status_code == 302  # log in first
    from tests.conftest import log_in

    log_in(client, "alice")
    page = client.get("/realtime/").get_data(as_text=True)
    assert "#general" in page
    room = client.get("/realtime/rooms/general").get_data(as_text=True)
    assert 'data-socket-path="/ws/rooms/general"' in room
    assert "/realtime/static/realtime/chat.js" in room
    assert client.get("/realtime/rooms/nowhere").status_code == 404


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "Give the room a name."),
        ("Has Spaces", "Use 1 to 50 lowercase letters"),
        ("<script>", "Use 1 to 50 lowercase letters"),
        ("x" * 51, "Use 1 to 50 lowercase letters"),
        ("general", "already exists"),
    ],
)
def test_creating_a_room_validates_the_name(chat_app: Flask, name: str, error: str) -> None:
    from tests.conftest import csrf_token, log_in

    client = chat_app.test_client()
    log_in(client, "alice")
    response = client.post("/realtime/", data={"csrf_token": csrf_token(client), "name": name})
    assert response.status_code == 400
    assert error in response.get_data(as_text=True)
    assert "<script>" not in response.get_data(as_text=True).split("<main")[1].split("</main>")[0]


def test_creating_a_room_needs_the_csrf_token_and_then_opens_it(chat_app: Flask) -> None:
    from tests.conftest import csrf_token, log_in

    client = chat_app.test_client()
    log_in(client, "alice")
    assert client.post("/realtime/", data={"name": "random"}).status_code == 400
    response = client.post("/realtime/", data={"csrf_token": csrf_token(client), "name": "random"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/realtime/rooms/random"
