"""PUSH with its SHA-256 in a trailer: the client reads its file once, hashing as it sends.

The attacks and accidents: a trailer that lies (or is garbage) must not leave a
file; a file changed between attempts must not be merged with the old version's
bytes; an upload a hash-first client left must still be found, by asking for the hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from apps.transfer import tcp
from tests.transfer.conftest import Owner, files_of, random_file, sha256_of
from tests.transfer.test_tcp import login, pull, push_part, received, running

VERSION = "0123456789abcdef"


@pytest.fixture
def server(app: Flask) -> Iterator[tcp.TransferServer]:
    with running(app) as started:
        yield started


def start(peer: Any, path: Path, version: str = VERSION) -> dict[str, Any]:
    return peer.ask(
        {
            "op": "push",
            "name": path.name,
            "size": path.stat().st_size,
            "checksum": "trailer",
            "version": version,
        }
    )


def push_with_trailer(peer: Any, path: Path, trailer: Any = None) -> dict[str, Any]:
    """A whole trailer PUSH: header, the bytes from the server's offset, the trailer."""
    reply = start(peer, path)
    assert reply["ok"], reply
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size > reply["offset"]:
            peer.sock.sendfile(f, reply["offset"], size - reply["offset"])
    peer.send(trailer if trailer is not None else {"sha256": sha256_of(path)})
    return peer.read()  # type: ignore[no-any-return]


def test_a_push_with_its_hash_after_the_bytes_is_kept_and_pulled_whole(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "video.bin"
    digest = random_file(source, 5_000_000)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with login(server.port, owner) as peer:
        done = push_with_trailer(peer, source)
        assert done["ok"] and done["sha256"] == digest and done["size"] == 5_000_000
        nothing = push_with_trailer(peer, empty)
        assert nothing["ok"] and nothing["sha256"] == hashlib.sha256(b"").hexdigest()
        reply, data = pull(peer, done["file_id"])
    assert reply["sha256"] == digest and hashlib.sha256(data).hexdigest() == digest
    assert sorted(f.size for f in files_of(app, owner) if f.complete) == [0, 5_000_000]


def test_a_trailer_that_does_not_match_the_bytes_leaves_no_file(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "claimed.bin"
    random_file(source, 2_000_000)
    lie = {"sha256": hashlib.sha256(b"something else").hexdigest()}
    with login(server.port, owner) as peer:
        assert push_with_trailer(peer, source, lie)["error"] == "checksum_mismatch"
        # The connection goes on: the refusal came after the whole message.
        assert peer.ask({"op": "stat", "file_id": "0" * 32})["error"] == "not_found"
    assert files_of(app, owner) == []


def test_a_garbled_trailer_is_a_bad_request_and_no_file_is_made(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "a.bin"
    random_file(source, 100_000)
    with login(server.port, owner) as peer:
        assert push_with_trailer(peer, source, {"sha256": "not hex"})["error"] == "bad_request"
        # The trailer was one whole message: the stream is still in step, so it goes on.
        assert peer.ask({"op": "stat", "file_id": "0" * 32})["error"] == "not_found"
    assert not any(f.complete for f in files_of(app, owner))


def test_a_trailer_push_cut_short_resumes_only_for_the_same_version_of_the_file(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    digest = random_file(source, 3_000_000)
    with login(server.port, owner) as peer:
        first = start(peer, source)
        assert first["ok"] and first["offset"] == 0
        peer.sock.sendall(source.read_bytes()[:1_000_000])  # then the client vanishes
    assert received(app, first["upload_id"], 1_000_000) == 1_000_000

    with login(server.port, owner) as peer:  # another version of a file of that name and size
        other = start(peer, source, version="fedcba9876543210")
        assert other["ok"] and other["offset"] == 0 and other["upload_id"] != first["upload_id"]

    with login(server.port, owner) as peer:  # the same version: from byte 1,000,000 on
        again = push_with_trailer(peer, source)
    assert again["ok"] and again["file_id"] == first["upload_id"] and again["sha256"] == digest


def test_a_client_that_vanishes_between_the_bytes_and_the_trailer_finishes_next_time(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    """Every byte arrived but no hash: nothing is a file yet, and nothing is sent twice."""
    source = tmp_path / "whole.bin"
    digest = random_file(source, 1_500_000)
    with login(server.port, owner) as peer:
        first = start(peer, source)
        peer.sock.sendall(source.read_bytes())  # then gone, without the trailer
    assert received(app, first["upload_id"], 1_500_000) == 1_500_000
    assert not any(f.complete for f in files_of(app, owner))

    with login(server.port, owner) as peer:
        again = start(peer, source)
        assert again["ok"] and again["offset"] == 1_500_000  # nothing left to send
        peer.send({"sha256": digest})
        done = peer.read()
    assert done["ok"] and done["file_id"] == first["upload_id"] and done["sha256"] == digest


def test_an_upload_left_by_a_hash_first_client_is_found_by_asking_for_the_hash(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "shared.bin"
    random_file(source, 2_000_000)
    upload_id = push_part(server.port, owner, source, 500_000)
    received(app, upload_id, 500_000)
    with login(server.port, owner) as peer:
        reply = start(peer, source)
        assert reply == {
            "ok": False,
            "error": "hash_first",
            "message": "an unfinished upload of this name and size exists: send the SHA-256 first",
        }
        # Asked before any byte: the connection goes on, and the hash finds the upload.
        resumed = peer.ask(
            {"op": "push", "name": source.name, "size": 2_000_000, "sha256": sha256_of(source)}
        )
    assert resumed["ok"] and resumed["upload_id"] == upload_id and resumed["offset"] == 500_000
    assert len(files_of(app, owner)) == 1  # the refusal made no upload of its own
