"""Files posted into chat rooms, on both stacks, over real HTTP and real sockets.

A message may carry one of the sender's finished files; members of the room
(users who joined it) download it through the file's own link, with Range;
anyone else gets 404; deleting the file or the message ends their access.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
import requests
from flask import Flask

from apps.realtime import models
from project.extensions import db
from tests.conftest import create_account
from tests.realtime.test_chat import Join, login_cookie, receive
from tests.realtime.test_chat import join as join  # noqa: F401,PLC0414 - the fixture
from tests.transfer.conftest import Owner, store_file

DATA = os.urandom(300_000) + "café".encode()
SHA256 = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def files_app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app(CHAT_RATE_LIMIT="1000 per minute", PRESENCE_INTERVAL=0.1)
    with app.app_context():
        alice = create_account("alice")
        create_account("bob")
        create_account("mallory")
        models.create_room("general", alice)
        models.create_room("elsewhere", alice)
    return app


@pytest.fixture
def app(files_app: Flask) -> Flask:
    return files_app  # live_server serves this app


@pytest.fixture
def alice_file(files_app: Flask) -> str:
    with files_app.app_context():
        user_id = int(db.fetch_value("SELECT id FROM users WHERE username = 'alice'"))
    return store_file(files_app, Owner(user_id, "alice", ""), "report <b>1</b>.pdf", DATA)


def download(base: str, cookie: str, file_id: str, **headers: str) -> requests.Response:
    return requests.get(
        f"{base}/transfer/files/{file_id}/download",
        headers={"Cookie": cookie, **headers},
        allow_redirects=False,
        timeout=10,
    )


def post_file(ws: Any, file: Any, body: str | None = None, client_id: str = "f1") -> None:
    frame: dict[str, Any] = {"type": "message", "file": file, "client_id": client_id}
    if body is not None:
        frame["body"] = body
    ws.send(json.dumps(frame))


def test_a_member_downloads_a_file_posted_in_the_room(
    live_server: str, join: Join, alice_file: str
) -> None:
    with join("alice") as alice, join("bob") as bob:
        receive(alice, "welcome")
        receive(bob, "welcome")
        post_file(alice, alice_file, body="the report")
        for ws in (alice, bob):
            message = receive(ws, "message")
            assert message["body"] == "the report"
            assert message["file"] == {
                "id": alice_file,
                "name": "report <b>1</b>.pdf",
                "size": len(DATA),
                "sha256": SHA256,
                "download_url": f"/transfer/files/{alice_file}/download",
            }
    bob_cookie = login_cookie(live_server, "bob")
    got = download(live_server, bob_cookie, alice_file)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == SHA256
    assert "report" in got.headers["Content-Disposition"]
    part = download(live_server, bob_cookie, alice_file, Range="bytes=100-199")
    assert part.status_code == 206 and part.content == DATA[100:200]
    # The history a later visitor gets carries the file too.
    with join("bob") as again:
        assert receive(again, "welcome")["messages"][-1]["file"]["sha256"] == SHA256


def test_someone_who_never_joined_the_room_gets_404(
    live_server: str, join: Join, alice_file: str
) -> None:
    with join("alice") as alice:
        receive(alice, "welcome")
        post_file(alice, alice_file)
        receive(alice, "message")
    with join("mallory", room="elsewhere") as mallory:  # a member of another room only
        receive(mallory, "welcome")
    mallory_cookie = login_cookie(live_server, "mallory")
    assert download(live_server, mallory_cookie, alice_file).status_code == 404
    anonymous = download(live_server, "", alice_file)
    assert anonymous.status_code == 302 and "/accounts/login" in anonymous.headers["Location"]


def test_deleting_the_message_or_the_file_ends_access(
    files_app: Flask, live_server: str, join: Join, alice_file: str
) -> None:
    bob_cookie = login_cookie(live_server, "bob")
    with join("alice") as alice, join("bob") as bob:
        receive(alice, "welcome")
        receive(bob, "welcome")
        post_file(alice, alice_file, client_id="a")
        first = receive(bob, "message")
        post_file(alice, alice_file, client_id="b")
        second = receive(bob, "message")
        receive(alice, "message")
        receive(alice, "message")

        bob.send(json.dumps({"type": "delete", "id": first["id"]}))  # not his message
        refused = receive(bob, "error")
        assert refused["code"] == "not_found"

        alice.send(json.dumps({"type": "delete", "id": first["id"]}))
        assert receive(bob, "deleted") == {"type": "deleted", "id": first["id"]}
        assert download(live_server, bob_cookie, alice_file).status_code == 200  # the other one

        alice.send(json.dumps({"type": "delete", "id": second["id"]}))
        receive(bob, "deleted")
        assert download(live_server, bob_cookie, alice_file).status_code == 404

    alice_cookie = login_cookie(live_server, "alice")
    with join("alice") as alice:
        receive(alice, "welcome")
        post_file(alice, alice_file, client_id="c")
        receive(alice, "message")
    assert download(live_server, bob_cookie, alice_file).status_code == 200
    page = requests.get(f"{live_server}/transfer/", headers={"Cookie": alice_cookie}, timeout=10)
    token = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    deleted = requests.post(
        f"{live_server}/transfer/files/{alice_file}/delete",
        data={"csrf_token": token},
        headers={"Cookie": alice_cookie},
        allow_redirects=False,
        timeout=10,
    )
    assert deleted.status_code == 302
    assert download(live_server, bob_cookie, alice_file).status_code == 404
    with join("bob") as bob:
        shown = receive(bob, "welcome")["messages"][-1]["file"]
        assert shown == {"id": alice_file, "name": "report <b>1</b>.pdf", "removed": True}


@pytest.mark.parametrize(
    "file",
    [
        "0" * 32,  # no such file
        "not-an-id",
        {"id": 5},
        ["x"],
        True,
    ],
)
def test_a_file_that_is_not_the_senders_is_refused(join: Join, file: Any) -> None:
    with join("alice") as alice:
        receive(alice, "welcome")
        post_file(alice, file, body="look")
        error = receive(alice, "error")
        assert error["code"] == "no_such_file" and error["client_id"] == "f1"


def test_only_the_senders_own_finished_files_can_be_attached(
    files_app: Flask, join: Join, alice_file: str
) -> None:
    with files_app.app_context():
        from apps.transfer import storage

        alice_id = int(db.fetch_value("SELECT id FROM users WHERE username = 'alice'"))
        unfinished = storage.start_upload(alice_id, filename="half.bin", size=10).id
    with join("bob") as bob:
        receive(bob, "welcome")
        post_file(bob, alice_file)  # alice's, not bob's
        assert receive(bob, "error")["code"] == "no_such_file"
    with join("alice") as alice:
        receive(alice, "welcome")
        post_file(alice, unfinished)
        assert receive(alice, "error")["code"] == "no_such_file"
        post_file(alice, {"id": alice_file}, client_id="ok")  # the object form works too
        assert receive(alice, "message")["file"]["id"] == alice_file


def test_a_message_without_a_file_is_as_before(join: Join) -> None:
    with join("alice") as alice:
        receive(alice, "welcome")
        alice.send(json.dumps({"type": "message", "body": "plain"}))
        message = receive(alice, "message")
        assert "file" not in message
        alice.send(json.dumps({"type": "message"}))
        assert receive(alice, "error")["code"] == "bad_request"


def test_my_files_are_listed_as_json_for_the_attach_button(
    live_server: str, alice_file: str
) -> None:
    cookie = login_cookie(live_server, "alice")
    listed = requests.get(
        f"{live_server}/transfer/files.json", headers={"Cookie": cookie}, timeout=10
    )
    assert listed.status_code == 200 and listed.headers["Cache-Control"] == "no-store"
    (only,) = listed.json()["files"]
    assert only["id"] == alice_file and only["sha256"] == SHA256 and only["size"] == len(DATA)
    bob = login_cookie(live_server, "bob")
    empty = requests.get(f"{live_server}/transfer/files.json", headers={"Cookie": bob}, timeout=10)
    assert empty.json() == {"files": []}
    anonymous = requests.get(
        f"{live_server}/transfer/files.json",
        headers={"Accept": "application/json"},
        allow_redirects=False,
        timeout=10,
    )
    assert anonymous.status_code == 401 and anonymous.json()["status"] == 401


def test_a_message_with_a_file_is_described_outside_a_request_too(
    files_app: Flask, alice_file: str
) -> None:
    """A worker catching its rooms up after a Redis outage does it on a thread, no request."""
    with files_app.app_context():
        room = models.get_room("general")
        alice_id = int(db.fetch_value("SELECT id FROM users WHERE username = 'alice'"))
        from project import shared_files

        file = shared_files.describe(alice_id, alice_file)
        assert file is not None and room is not None
        models.add_message(room.id, alice_id, "alice", "", None, file)
        (message,) = models.messages_after(room.id, 0, 10)
        assert message.as_json()["file"]["download_url"] == f"/transfer/files/{alice_file}/download"


def test_a_page_on_another_site_cannot_make_a_visitor_a_member(
    files_app: Flask, live_server: str, alice_file: str
) -> None:
    """Cross-site WebSocket hijacking: refused at the handshake, before any membership."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    cookie = login_cookie(live_server, "mallory")
    with pytest.raises(InvalidStatus) as refused:
        connect(
            "ws" + live_server[4:] + "/ws/rooms/general",
            additional_headers={"Cookie": cookie},
            origin="https://evil.example",  # type: ignore[arg-type]
        )
    assert refused.value.response.status_code == 403
    with files_app.app_context():
        room = models.get_room("general")
        mallory = int(db.fetch_value("SELECT id FROM users WHERE username = 'mallory'"))
        assert room is not None and not models.is_member(room.id, mallory)


def test_a_file_whose_owner_was_deleted_shows_as_removed(
    files_app: Flask, live_server: str, join: Join, alice_file: str
) -> None:
    with join("alice") as alice:
        receive(alice, "welcome")
        post_file(alice, alice_file)
        receive(alice, "message")
    with files_app.app_context():
        db.execute("DELETE FROM users WHERE username = 'alice'")  # its files go with it
    bob_cookie = login_cookie(live_server, "bob")
    assert download(live_server, bob_cookie, alice_file).status_code == 404
    with join("bob") as bob:
        shown = receive(bob, "welcome")["messages"][-1]["file"]
        assert shown == {"id": alice_file, "name": "report <b>1</b>.pdf", "removed": True}


@pytest.mark.parametrize("bad", ["1", None, True, 1.5, [1]])
def test_a_delete_without_an_integer_id_is_refused_and_deletes_nothing(
    join: Join, bad: Any
) -> None:
    with join("alice") as alice:
        receive(alice, "welcome")
        alice.send(json.dumps({"type": "message", "body": "keep me"}))
        kept = receive(alice, "message")
        alice.send(json.dumps({"type": "delete", "id": bad}))
        assert receive(alice, "error")["code"] == "bad_request"
    with join("alice") as again:
        assert [m["id"] for m in receive(again, "welcome")["messages"]] == [kept["id"]]
