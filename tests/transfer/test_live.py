"""Uploads heard live on the owner's ``ws /ws/me``, whichever way the bytes come.

Real parts throughout: the app served by werkzeug (both stacks), the
``websockets`` library as the page, ``tuspy`` as a tus client, the real CLI
pushing over the TCP fast path to the app's transfer server in a thread.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from websockets.sync.client import ClientConnection, connect

from apps.transfer import storage
from tests.realtime.test_chat import login_cookie
from tests.transfer.conftest import (
    Owner,
    OwnerFactory,
    at,
    cli,
    make_owner,
    random_file,
)
from tests.transfer.test_tcp import running
from tests.transfer.test_tus import create, patch, uploader

MiB = 1024 * 1024


@contextmanager
def open_me(base: str, username: str) -> Iterator[ClientConnection]:
    """*username*'s live channel on the server at *base*, listening once it is entered."""
    cookie = login_cookie(base, username)
    with connect("ws" + base[4:] + "/ws/me", additional_headers={"Cookie": cookie}) as ws:
        ws.ping().wait(5)  # answered by the handler's read loop: it is subscribed by then
        yield ws


@pytest.fixture
def me(live_server: str, owner: Owner) -> Iterator[ClientConnection]:
    """Alice's live channel on the test app."""
    with open_me(live_server, owner.username) as ws:
        yield ws


def until(ws: ClientConnection, kind: str, timeout: float = 10) -> list[dict[str, Any]]:
    """Events up to and including the first of *kind*."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1]["type"] != kind:
        seen.append(json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic()))))
    return seen


def quiet(ws: ClientConnection, seconds: float = 0.6) -> list[dict[str, Any]]:
    """What *ws* gets within *seconds* (nothing, when nothing more was meant for it)."""
    found = []
    try:
        while True:
            found.append(json.loads(ws.recv(timeout=seconds)))
    except TimeoutError:
        return found


def check_progress(events: list[dict[str, Any]], upload_id: str, name: str, size: int) -> None:
    progress = [e for e in events if e["type"] == "transfer.progress"]
    assert progress, "no progress event came before the file"
    for event in progress:
        assert set(event) == {"type", "upload", "name", "offset", "length"}
        assert (event["upload"], event["name"], event["length"]) == (upload_id, name, size)
    offsets = [e["offset"] for e in progress]
    assert offsets == sorted(offsets) and offsets[-1] == size


def check_complete(event: dict[str, Any], file_id: str, name: str, size: int, digest: str) -> None:
    assert event["type"] == "transfer.complete"
    assert event["file"] == {
        "id": file_id,
        "name": name,
        "size": size,
        "sha256": digest,
        "download_url": f"/transfer/files/{file_id}/download",
    }


def test_a_tus_upload_is_heard_chunk_by_chunk_then_as_a_file(
    live_server: str, owner: Owner, me: ClientConnection, tmp_path: Path
) -> None:
    path = tmp_path / "notes é.bin"
    digest = random_file(path, 3 * MiB + 5)
    with uploader(live_server, owner, path) as upload:
        upload.upload()
    upload_id = upload.url.rsplit("/", 1)[1]
    events = until(me, "transfer.complete")
    check_progress(events, upload_id, path.name, 3 * MiB + 5)
    check_complete(events[-1], upload_id, path.name, 3 * MiB + 5, digest)
    assert quiet(me) == []  # no stale progress after the file
    download = requests.get(
        live_server + events[-1]["file"]["download_url"], headers=owner.auth, timeout=10
    )
    assert hashlib.sha256(download.content).hexdigest() == digest


def test_another_user_hears_nothing_of_it(
    app: Flask, live_server: str, owner: Owner, me: ClientConnection, tmp_path: Path
) -> None:
    make_owner(app, "bob")
    path = tmp_path / "private.bin"
    random_file(path, 600 * 1024)
    with open_me(live_server, "bob") as bob:
        with uploader(live_server, owner, path) as upload:
            upload.upload()
        until(me, "transfer.complete")
        assert quiet(bob) == []


def test_a_stopped_upload_reports_where_it_stopped(
    live_server: str, owner: Owner, me: ClientConnection
) -> None:
    """Two chunks at once: the second's offset is held back by the rate, and still sent."""
    url = create(live_server, owner, 100, filename="half.bin").headers["Location"]
    assert patch(url, owner, 0, b"a" * 30).status_code == 204
    assert patch(url, owner, 30, b"b" * 20).status_code == 204
    events = quiet(me, 1.0)
    assert [e["offset"] for e in events] == [30, 50]
    assert {e["type"] for e in events} == {"transfer.progress"}


def test_a_file_that_is_not_what_was_declared_is_a_failure(
    live_server: str, owner: Owner, me: ClientConnection
) -> None:
    declared = hashlib.sha256(b"what I meant to send").hexdigest()
    url = create(live_server, owner, 8, filename="x.bin", sha256=declared).headers["Location"]
    assert patch(url, owner, 0, b"abcdefgh").status_code == 460
    failed = until(me, "transfer.failed")[-1]
    assert set(failed) == {"type", "upload", "code", "message"}
    assert failed["upload"] == url.rsplit("/", 1)[1]
    assert failed["code"] == "checksum_mismatch"
    assert "SHA-256" in failed["message"]
    assert quiet(me) == []


def test_a_quota_refusal_is_a_failure_naming_the_file(owner_factory: OwnerFactory) -> None:
    _, base, owner = owner_factory(TRANSFER_USER_QUOTA=1000)
    with open_me(base, owner.username) as ws:
        assert create(base, owner, 1001, filename="big.iso").status_code == 413
        failed = until(ws, "transfer.failed")[-1]
    assert failed["upload"] is None  # refused before it was an upload
    assert failed["code"] == "quota"
    assert failed["message"].startswith("big.iso: ") and "quota" in failed["message"]


def test_an_expired_upload_removed_by_cleanup_is_a_failure(owner_factory: OwnerFactory) -> None:
    app, base, owner = owner_factory(TRANSFER_UPLOAD_EXPIRY=1)
    url = create(base, owner, 8, filename="late.bin").headers["Location"]
    time.sleep(1.2)
    with open_me(base, owner.username) as ws:
        with app.app_context():
            assert storage.cleanup().expired_uploads == 1
        failed = until(ws, "transfer.failed")[-1]
    assert (failed["upload"], failed["code"]) == (url.rsplit("/", 1)[1], "expired")


def test_a_fast_upload_sends_four_progress_events_a_second_and_the_last(
    app: Flask, owner: Owner, me: ClientConnection
) -> None:
    """Stops a fast upload flooding the broker: storage reports every megabyte (here about 80
    a second); the pages get at most 4 a second of them, and the last offset always."""
    size = 160 * MiB
    with app.app_context():
        upload = storage.start_upload(owner.user_id, filename="fast.bin", size=size)
    block = b"x" * MiB

    def reader(view: memoryview) -> int:
        time.sleep(0.012)
        view[: len(block)] = block
        return len(block)

    def write() -> None:
        with app.app_context():
            storage.receive(upload, 0, reader)

    started = time.monotonic()
    writer = threading.Thread(target=write)
    writer.start()
    events = until(me, "transfer.complete", timeout=60)
    seconds = time.monotonic() - started
    writer.join()
    progress = [e["offset"] for e in events if e["type"] == "transfer.progress"]
    assert progress[-1] == size
    assert seconds > 1.5  # the test measures what it means to
    assert len(progress) <= 4 * seconds + 2, (len(progress), seconds)


@pytest.mark.slow
def test_a_cli_push_over_tcp_is_heard_live(
    app: Flask, owner: Owner, me: ClientConnection, tmp_path: Path
) -> None:
    source = tmp_path / "from the laptop.tar"
    digest = random_file(source, 5 * MiB + 3)
    with running(app) as server:
        pushed = cli(tmp_path, owner.key, "push", str(source), at(server), "-q")
    assert pushed.code == 0, pushed.err
    file_id = pushed.out.strip()
    events = until(me, "transfer.complete")
    check_progress(events, file_id, source.name, 5 * MiB + 3)
    check_complete(events[-1], file_id, source.name, 5 * MiB + 3, digest)
