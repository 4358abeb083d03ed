"""The TCP fast path's server, driven byte by byte as a client (or an attacker) would.

The server runs in a thread of the test process, on both stacks, except for
one test that runs ``manage.py transfer-server`` and stops it with SIGTERM.
Every refusal is checked for its error code and for what it left behind: no
row, no bytes, or exactly the bytes received before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from apps.accounts import apikeys
from apps.transfer import models, tcp, wire
from tests.conftest import serve_in_thread
from tests.transfer.conftest import (
    ROOT,
    Owner,
    Tls,
    app_and_owner,
    files_of,
    random_file,
    sha256_of,
)

EMBEDDED = pytest.mark.parametrize("stack", ["embedded"], indirect=True)  # stack-independent


# -- a server in a thread, and a hand-driven peer ----------------------------------------------


@contextmanager
def running(app: Flask) -> Iterator[tcp.TransferServer]:
    """The app's transfer server on a free port, served from a thread until the block ends."""
    server = tcp.make_server(app, "127.0.0.1", 0)
    thread = serve_in_thread(server, "transfer-server")
    try:
        yield server
    finally:
        server.shutdown()
        server.close()
        thread.join(timeout=10)


@pytest.fixture
def server(app: Flask) -> Iterator[tcp.TransferServer]:
    with running(app) as started:
        yield started


class Peer:
    """One connection, each message put on the wire by the test."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 10) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def read(self) -> dict[str, Any]:
        return wire.read_message(self.sock)

    def send(self, message: dict[str, Any]) -> None:
        wire.send_message(self.sock, message)

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send(message)
        return self.read()

    def nonce(self) -> bytes:
        challenge = self.read()
        assert challenge["type"] == "challenge" and challenge["version"] == 1
        return wire.decode_nonce(challenge["nonce"])

    def answer(self, key: str) -> dict[str, Any]:
        """Answer the challenge with *key*, as a client holding it would."""
        nonce = self.nonce()
        key_id, secret = split_key(key)
        return self.ask(
            {"type": "auth", "key_id": key_id, "mac": wire.auth_mac(secret, nonce, key_id)}
        )

    def closed(self) -> bool:
        """Whether the server closed the connection (EOF) without sending anything more."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def split_key(key: str) -> tuple[str, bytes]:
    _, key_id, secret = key.split("_", 2)
    return key_id, secret.encode()


def login(port: int, owner: Owner, **kwargs: Any) -> Peer:
    peer = Peer(port, **kwargs)
    assert peer.answer(owner.key) == {"ok": True, "user": owner.username}
    return peer


def push(
    peer: Peer, path: Path, name: str | None = None, sha256: str | None = None
) -> dict[str, Any]:
    """A whole PUSH as the CLI does it; returns the final reply."""
    size = path.stat().st_size
    reply = peer.ask(
        {"op": "push", "name": name or path.name, "size": size, "sha256": sha256 or sha256_of(path)}
    )
    assert reply["ok"], reply
    with open(path, "rb") as f:
        if size > reply["offset"]:
            peer.sock.sendfile(f, reply["offset"], size - reply["offset"])
    return peer.read()


def pull(peer: Peer, file_id: str, offset: int = 0) -> tuple[dict[str, Any], bytes]:
    reply = peer.ask({"op": "pull", "file_id": file_id, "offset": offset})
    if not reply["ok"]:
        return reply, b""
    return reply, wire.recv_exact(peer.sock, reply["size"] - offset)


def push_part(port: int, owner: Owner, path: Path, count: int) -> str:
    """Start a PUSH, send only *count* bytes, and vanish; returns the upload id."""
    with login(port, owner) as peer:
        reply = peer.ask(
            {
                "op": "push",
                "name": path.name,
                "size": path.stat().st_size,
                "sha256": sha256_of(path),
            }
        )
        with open(path, "rb") as f:
            peer.sock.sendall(f.read(count))
    return str(reply["upload_id"])


def received(app: Flask, upload_id: str, at_least: int = 1, seconds: float = 10) -> int:
    """The upload's recorded offset, once the server has noticed the client left."""
    deadline = time.monotonic() + seconds
    while True:
        with app.app_context():
            upload = models.get(upload_id)
        assert upload is not None
        if upload.received >= at_least or time.monotonic() > deadline:
            return upload.received
        time.sleep(0.05)


def on_disk(app: Flask) -> list[Path]:
    root = Path(app.config["MEDIA_ROOT"]) / "transfer"
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- the happy path ----------------------------------------------------------------------------


def test_push_then_pull_gives_back_the_same_bytes(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "report 2026.bin"
    digest = random_file(source, 3 * 1024 * 1024 + 17)
    with login(server.port, owner) as peer:
        done = push(peer, source)
        assert done == {"ok": True, "file_id": done["file_id"], "sha256": digest, "size": 3145745}
        # The same connection goes on: a pull, then a resumed pull.
        described, data = pull(peer, done["file_id"])
        assert described["name"] == "report 2026.bin" and described["sha256"] == digest
        assert hashlib.sha256(data).hexdigest() == digest
        _, tail = pull(peer, done["file_id"], offset=1_000_000)
        assert tail == data[1_000_000:]
        assert peer.ask({"op": "stat", "file_id": done["file_id"]}) == described
    [listed] = files_of(app, owner)
    assert (listed.id, listed.complete, listed.sha256) == (done["file_id"], True, digest)


def test_an_empty_file_is_pushed_and_pulled(
    server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "empty"
    source.touch()
    with login(server.port, owner) as peer:
        done = push(peer, source)
        assert done["ok"] and done["sha256"] == hashlib.sha256(b"").hexdigest()
        described, data = pull(peer, done["file_id"])
        assert (described["size"], data) == (0, b"")
        assert peer.ask({"op": "stat", "file_id": done["file_id"]})["ok"]  # still in step


# -- resuming ----------------------------------------------------------------------------------


def test_a_client_that_vanishes_mid_file_keeps_its_bytes_and_the_next_push_resumes(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    digest = random_file(source, 5 * 1024 * 1024)
    upload_id = push_part(server.port, owner, source, 2 * 1024 * 1024 + 5)
    assert received(app, upload_id) == 2 * 1024 * 1024 + 5
    with login(server.port, owner) as peer:
        reply = peer.ask(
            {"op": "push", "name": source.name, "size": 5 * 1024 * 1024, "sha256": digest}
        )
        assert reply == {"ok": True, "upload_id": upload_id, "offset": 2 * 1024 * 1024 + 5}
        with open(source, "rb") as f:
            peer.sock.sendfile(f, reply["offset"])
        done = peer.read()
        assert done["ok"] and done["file_id"] == upload_id and done["sha256"] == digest
        assert hashlib.sha256(pull(peer, upload_id)[1]).hexdigest() == digest


def test_a_client_that_goes_silent_mid_file_is_cut_off_and_its_bytes_kept(
    make_app: Any, tmp_path: Path
) -> None:
    app, owner = app_and_owner(make_app, TRANSFER_SERVER_TIMEOUT=0.5)
    source = tmp_path / "slow.bin"
    random_file(source, 1024 * 1024)
    with running(app) as server, login(server.port, owner) as peer:
        reply = peer.ask(
            {"op": "push", "name": "slow.bin", "size": 1024 * 1024, "sha256": sha256_of(source)}
        )
        peer.sock.sendall(source.read_bytes()[:300_000])
        started = time.monotonic()
        assert peer.closed()
        assert time.monotonic() - started < 5
    assert received(app, reply["upload_id"]) == 300_000


def test_many_stalled_pushes_do_not_starve_the_database_pool(make_app: Any, tmp_path: Path) -> None:
    """More stalled clients than pooled connections (5 in tests): the next one still gets in."""
    app, owner = app_and_owner(make_app, TRANSFER_SERVER_MAX_CLIENTS=20)
    assert app.config["DB_POOL_SIZE"] == 5
    source = tmp_path / "x.bin"
    digest = random_file(source, 256 * 1024)
    with running(app) as server:
        stalled = []
        for n in range(7):
            peer = login(server.port, owner)
            stalled.append(peer)
            reply = peer.ask(
                {"op": "push", "name": f"{n}.bin", "size": 256 * 1024, "sha256": digest}
            )
            assert reply["ok"]
            peer.sock.sendall(b"x" * 1000)  # then nothing: each holds its upload open
        idle = [login(server.port, owner) for _ in range(3)]
        try:
            with login(server.port, owner, timeout=5) as peer:
                assert push(peer, source)["sha256"] == digest
        finally:
            for peer in stalled + idle:
                peer.sock.close()


# -- authentication ----------------------------------------------------------------------------


def test_a_key_that_passes_the_challenge_is_marked_used(
    app: Flask, server: tcp.TransferServer, owner: Owner
) -> None:
    with app.app_context():
        (key,) = apikeys.list_keys(owner.user_id)
        assert key.last_used_at is None
    with login(server.port, owner):
        pass
    with app.app_context():
        (key,) = apikeys.list_keys(owner.user_id)
        assert key.last_used_at is not None


def test_a_wrong_answer_is_refused_and_the_connection_closed(
    app: Flask, server: tcp.TransferServer, owner: Owner
) -> None:
    key_id, _ = split_key(owner.key)
    with Peer(server.port) as peer:
        nonce = peer.nonce()
        wrong = wire.auth_mac(b"not the secret", nonce, key_id)
        reply = peer.ask({"type": "auth", "key_id": key_id, "mac": wrong})
        assert reply["ok"] is False and reply["error"] == "auth_failed"
        assert peer.closed()


def test_a_key_minted_by_accounts_has_the_wire_shape(owner: Owner) -> None:
    """accounts mints keys, the wire format says what a client sends: the two must agree."""
    match = wire.KEY_PATTERN.match(owner.key)
    assert match and owner.key == f"fmk_{match['key_id']}_{match['secret']}"
    assert wire.KEY_ID.match(match["key_id"])
    assert apikeys.KEY_PATTERN.pattern == wire.KEY_PATTERN.pattern


def test_an_unknown_or_revoked_key_gets_the_same_answer_as_a_wrong_one(
    app: Flask, server: tcp.TransferServer, owner: Owner
) -> None:
    def refusal(key: str) -> dict[str, Any]:
        with Peer(server.port) as peer:
            reply = peer.answer(key)
            assert peer.closed()
            return reply

    key_id, secret = split_key(owner.key)
    unknown = refusal(f"fmk_{'0' * 16}_{secret.decode()}")
    assert unknown["error"] == "auth_failed"
    wrong = refusal(f"fmk_{key_id}_{'A' * 43}")
    assert wrong == unknown
    with app.app_context():
        [key] = apikeys.list_keys(owner.user_id)
        assert apikeys.revoke_key(key.id)
    assert refusal(owner.key) == unknown


def test_an_answer_replayed_from_an_earlier_connection_fails(
    server: tcp.TransferServer, owner: Owner
) -> None:
    key_id, secret = split_key(owner.key)
    with Peer(server.port) as first:
        seen_nonce = first.nonce()
        recorded = {
            "type": "auth",
            "key_id": key_id,
            "mac": wire.auth_mac(secret, seen_nonce, key_id),
        }
        assert first.ask(recorded)["ok"] is True
    with Peer(server.port) as second:
        assert second.nonce() != seen_nonce
        reply = second.ask(recorded)
        assert reply["error"] == "auth_failed"
        assert second.closed()


@EMBEDDED
def test_operations_need_authentication_first(server: tcp.TransferServer) -> None:
    with Peer(server.port) as peer:
        peer.nonce()
        reply = peer.ask({"op": "pull", "file_id": "0" * 32, "offset": 0})
        assert reply["error"] == "bad_request"
        assert peer.closed()


# -- malformed messages ------------------------------------------------------------------------


@EMBEDDED
def test_a_message_over_the_limit_is_refused_then_closed(
    server: tcp.TransferServer, owner: Owner
) -> None:
    with login(server.port, owner) as peer:
        payload = b'{"op":"push","name":"' + b"a" * (64 * 1024) + b'"}'
        peer.sock.sendall(len(payload).to_bytes(4, "big") + payload)
        reply = peer.read()
        assert reply["error"] == "bad_request" and "65536-byte limit" in reply["message"]
        assert peer.closed()
    with Peer(server.port) as peer:  # before authentication too, and nothing is read first
        peer.nonce()
        peer.sock.sendall((2**32 - 1).to_bytes(4, "big"))
        assert peer.read()["error"] == "bad_request"
        assert peer.closed()


@pytest.mark.parametrize(
    ("mangle", "answer"),
    [
        pytest.param(lambda m: m[:2], None, id="half a length"),
        pytest.param(lambda m: m[:-10], None, id="half a message"),
        pytest.param(lambda m: m[:4] + b"{" * (len(m) - 4), "bad_request", id="not JSON"),
    ],
)
def test_a_push_header_cut_short_or_garbled_stores_nothing(
    app: Flask, server: tcp.TransferServer, owner: Owner, mangle: Any, answer: str | None
) -> None:
    message = wire.encode_message(
        {"op": "push", "name": "a.bin", "size": 1000, "sha256": "ab" * 32}
    )
    with login(server.port, owner) as peer:
        peer.sock.sendall(mangle(message))
        peer.sock.shutdown(socket.SHUT_WR)
        if answer is not None:
            assert peer.read()["error"] == answer
        assert peer.closed()
    assert files_of(app, owner) == [] and on_disk(app) == []
    with login(server.port, owner) as peer:  # the server is none the worse
        assert peer.ask({"op": "stat", "file_id": "0" * 32})["error"] == "not_found"


@EMBEDDED
@pytest.mark.parametrize(
    "request_",
    [
        {"op": "push", "name": "a", "size": -1, "sha256": "ab" * 32},
        {"op": "push", "name": "a", "size": True, "sha256": "ab" * 32},
        {"op": "push", "name": "a", "size": 10, "sha256": "not hex"},
        {"op": "push", "name": "a", "size": 10, "checksum": "trailer", "version": "NOT-HEX"},
        {"op": "push", "name": "a", "size": 10, "checksum": "trailer", "version": "ab" * 33},
        {"op": "pull", "file_id": "0" * 32, "offset": "0"},
        {"op": "delete", "file_id": "0" * 32},
        ["op", "push"],
    ],
    ids=[
        "negative size",
        "boolean size",
        "bad sha256",
        "bad trailer version",
        "trailer version too long",
        "string offset",
        "unknown op",
        "array",
    ],
)
def test_a_malformed_request_is_refused(
    server: tcp.TransferServer, owner: Owner, request_: Any
) -> None:
    with login(server.port, owner) as peer:
        payload = json.dumps(request_).encode()
        peer.sock.sendall(len(payload).to_bytes(4, "big") + payload)
        assert peer.read()["error"] == "bad_request"
        assert peer.closed()


# -- refusals that leave the connection usable -------------------------------------------------


def test_pull_of_an_unknown_or_someone_elses_file_is_not_found(
    app: Flask, server: tcp.TransferServer, owner: Owner, other: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "mine.bin"
    random_file(source, 1000)
    with login(server.port, owner) as peer:
        file_id = push(peer, source)["file_id"]
    with login(server.port, other) as peer:
        for wanted in (file_id, "f" * 32, "../../etc/passwd"):
            reply, data = pull(peer, wanted)
            assert (reply["ok"], reply["error"], data) == (False, "not_found", b"")
            assert peer.ask({"op": "stat", "file_id": wanted})["error"] == "not_found"
        assert pull(peer, file_id, offset=0)[0]["error"] == "not_found"  # still connected
    with login(server.port, owner) as peer:
        assert pull(peer, file_id, offset=1001)[0]["error"] == "bad_request"


def test_an_unfinished_upload_cannot_be_pulled(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "half.bin"
    random_file(source, 100_000)
    upload_id = push_part(server.port, owner, source, 50_000)
    received(app, upload_id)
    with login(server.port, owner) as peer:
        assert pull(peer, upload_id)[0]["error"] == "not_found"


def test_a_push_over_the_quota_is_refused_before_any_byte(make_app: Any, tmp_path: Path) -> None:
    app, owner = app_and_owner(make_app, TRANSFER_USER_QUOTA=1_500_000)
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    random_file(first, 1_000_000)
    random_file(second, 600_000)
    with running(app) as server, login(server.port, owner) as peer:
        assert push(peer, first)["ok"]
        reply = peer.ask(
            {"op": "push", "name": "second.bin", "size": 600_000, "sha256": sha256_of(second)}
        )
        assert reply["error"] == "quota" and "500000" in reply["message"]
        small = tmp_path / "small.bin"
        random_file(small, 400_000)
        assert push(peer, small)["ok"]  # the connection goes on
    assert sorted(f.size for f in files_of(app, owner)) == [400_000, 1_000_000]


def test_a_file_over_the_size_limit_is_refused(make_app: Any, tmp_path: Path) -> None:
    app, owner = app_and_owner(make_app, TRANSFER_MAX_FILE_SIZE=1000)
    with running(app) as server, login(server.port, owner) as peer:
        reply = peer.ask({"op": "push", "name": "big", "size": 1001, "sha256": "ab" * 32})
        assert reply["error"] == "too_large"
    assert files_of(app, owner) == []


def test_bytes_that_do_not_match_the_declared_sha256_are_not_kept(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "claimed.bin"
    random_file(source, 2_000_000)
    with login(server.port, owner) as peer:
        reply = push(peer, source, sha256=hashlib.sha256(b"something else").hexdigest())
        assert reply["error"] == "checksum_mismatch"
        assert peer.ask({"op": "stat", "file_id": "0" * 32})["error"] == "not_found"
    assert files_of(app, owner) == [] and on_disk(app) == []


# -- limits ------------------------------------------------------------------------------------


@EMBEDDED
def test_clients_over_the_limit_are_told_busy_once_authenticated(make_app: Any) -> None:
    """Slots are for clients that proved their key: one past the limit is told busy after it
    answers the challenge, and the next gets in as soon as a slot frees."""
    app, owner = app_and_owner(make_app, TRANSFER_SERVER_MAX_CLIENTS=2)
    with running(app) as server:
        first, second = login(server.port, owner), login(server.port, owner)
        with Peer(server.port) as third:
            assert third.answer(owner.key)["error"] == "busy"
            assert third.closed()
        first.sock.close()
        second.sock.close()
        deadline = time.monotonic() + 5
        while True:  # the slots free as soon as the server sees the two leave
            with Peer(server.port) as fourth:
                if fourth.answer(owner.key).get("ok"):
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)


@EMBEDDED
def test_connections_that_never_authenticate_do_not_keep_a_client_out(
    make_app: Any, tmp_path: Path
) -> None:
    """Stops pre-auth slot holding: four connections announcing a 60 KB message and dripping a
    byte a second kept a real client out of a 2-client server for 16 s. Now they hold no slot,
    the oldest waiting one is dropped for a newcomer, and the whole pre-auth phase has one
    deadline (TRANSFER_SERVER_AUTH_TIMEOUT)."""
    app, owner = app_and_owner(
        make_app,
        TRANSFER_SERVER_MAX_CLIENTS=2,
        TRANSFER_SERVER_TIMEOUT=3,
        TRANSFER_SERVER_AUTH_TIMEOUT=2,
    )
    stop = threading.Event()
    with running(app) as server:

        def drip() -> None:
            address = ("127.0.0.1", server.port)
            with (
                socket.create_connection(address, timeout=30) as sock,
                contextlib.suppress(OSError),
            ):
                sock.sendall(struct.pack("!I", 60_000))  # a message that never comes
                while not stop.wait(1):
                    sock.sendall(b"x")

        drippers = [threading.Thread(target=drip) for _ in range(4)]
        for thread in drippers:
            thread.start()
        time.sleep(0.5)
        try:
            with login(server.port, owner) as peer:
                path = tmp_path / "real.bin"
                random_file(path, 100_000)
                assert push(peer, path)["ok"]
        finally:
            stop.set()
            for thread in drippers:
                thread.join(timeout=30)


@EMBEDDED
def test_a_client_that_does_not_authenticate_in_time_is_cut(make_app: Any) -> None:
    app, _ = app_and_owner(make_app, TRANSFER_SERVER_TIMEOUT=30, TRANSFER_SERVER_AUTH_TIMEOUT=1)
    with running(app) as server, Peer(server.port) as slow:
        slow.nonce()
        started = time.monotonic()
        slow.sock.sendall(struct.pack("!I", 100))  # then nothing: every read would wait 30 s
        assert slow.closed()
        assert time.monotonic() - started < 10


@EMBEDDED
def test_a_lone_surrogate_in_the_answer_is_a_bad_request_without_a_traceback(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Stops log flooding: a lone surrogate in key_id or mac raised while encoding and logged
    a full traceback at ERROR for every unauthenticated attempt."""
    app, _ = app_and_owner(make_app)
    with running(app) as server:
        for field in ("key_id", "mac"):
            with Peer(server.port) as peer:
                peer.nonce()
                answer = {"type": "auth", "key_id": "0123456789abcdef", "mac": "00"}
                answer[field] = "\ud800" + answer[field]
                payload = json.dumps(answer).encode()  # ensure_ascii keeps the lone surrogate
                peer.sock.sendall(struct.pack("!I", len(payload)) + payload)
                assert peer.read()["error"] == "bad_request"
    assert not [r for r in caplog.records if r.levelname == "ERROR" or r.exc_info]


def test_a_key_revoked_mid_connection_stops_at_the_next_request(
    app: Flask, owner: Owner, server: tcp.TransferServer, tmp_path: Path
) -> None:
    """Stops a revoked key living on in an open connection: the key is checked again before
    each request."""
    path = tmp_path / "a.bin"
    random_file(path, 1000)
    with login(server.port, owner) as peer:
        assert push(peer, path)["ok"]
        with app.app_context():
            [key] = apikeys.list_keys(owner.user_id)
            apikeys.revoke_key(key.id)
        reply = peer.ask({"op": "stat", "file_id": "0" * 32})
        assert reply["error"] == "auth_failed"
        assert peer.closed()


@EMBEDDED
def test_an_idle_connection_is_closed_after_the_timeout(make_app: Any) -> None:
    app, owner = app_and_owner(make_app, TRANSFER_SERVER_TIMEOUT=0.5)
    with running(app) as server:
        with Peer(server.port) as silent:  # a half-open peer never answers the challenge
            silent.nonce()
            started = time.monotonic()
            assert silent.read()["error"] == "timeout"
            assert silent.closed()
            assert 0.4 < time.monotonic() - started < 5
        with login(server.port, owner) as idle:  # nor sends a request after logging in
            assert idle.read()["error"] == "timeout"


# -- TLS ---------------------------------------------------------------------------------------


@EMBEDDED
def test_tls_with_a_self_signed_certificate(tls: Tls, tmp_path: Path) -> None:
    app, owner, cert = tls.app, tls.owner, tls.cert
    source = tmp_path / "secret.bin"
    digest = random_file(source, 2 * 1024 * 1024 + 3)
    trusting = ssl.create_default_context(cafile=str(cert))
    with running(app) as server:
        with login(server.port, owner, tls=trusting) as peer:
            assert peer.sock.version() in {"TLSv1.2", "TLSv1.3"}
            done = push(peer, source)
            assert done["sha256"] == digest
            assert hashlib.sha256(pull(peer, done["file_id"])[1]).hexdigest() == digest
        with pytest.raises(ssl.SSLCertVerificationError):
            Peer(server.port, tls=ssl.create_default_context())
        with Peer(server.port, timeout=3) as plain:  # plain TCP gets no challenge in clear
            plain.sock.sendall(b"\x00\x00\x00\x02{}")
            assert plain.closed()


# -- the command -------------------------------------------------------------------------------


def test_the_transfer_server_command_serves_logs_and_stops_on_sigterm(
    app: Flask, owner: Owner, tmp_path: Path
) -> None:
    config = app.config
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_ENV", "TRANSFER_"))}
    env.update(
        APP_ENV="test",
        SECRET_KEY=config["SECRET_KEY"],  # the key's secret is encrypted under it
        DATABASE_URL=config["DATABASE_URL"],
        REDIS_URL=config["REDIS_URL"] or "",
        REDIS_KEY_PREFIX=config["REDIS_KEY_PREFIX"],
        MEDIA_ROOT=config["MEDIA_ROOT"],
    )
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "transfer-server", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = ""
        while not (match := re.search(r"listening on 127\.0\.0\.1:(\d+) \(plain TCP", seen)):
            line = proc.stderr.readline()
            assert line, f"the server did not start: {seen}"
            seen += line
        source = tmp_path / "via-command.bin"
        digest = random_file(source, 1_500_000)
        with login(int(match[1]), owner) as peer:
            assert push(peer, source)["sha256"] == digest
            idle = login(int(match[1]), owner)  # still open when the server is told to stop
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
            assert idle.closed()
            idle.sock.close()
        log = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert re.search(
        r"push done: alice \w{32} \(via-command\.bin, 1500000 bytes\) 1500000 bytes in [\d.]+ s,"
        r" [\d.]+ MB/s, from 127\.0\.0\.1:\d+",
        log,
    ), log
    assert log.rstrip().endswith("transfer server stopped")
