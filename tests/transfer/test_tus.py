"""The tus 1.0.0 server, driven by the real `tuspy` client and by hand-made requests.

Each refusal is checked for its status, its JSON body, and that nothing was
lost or corrupted: the offset did not move and the bytes on disk are the ones
accepted before.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from apps.transfer import models, storage
from tests.conftest import csrf_token, log_in
from tests.transfer.conftest import Owner, OwnerFactory, random_file, sha256_of

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {"Content-Type": "application/offset+octet-stream"}


def endpoint(base: str) -> str:
    return base + "/api/transfer/uploads"


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def create(base: str, owner: Owner, size: int, **meta: str) -> requests.Response:
    headers = {**TUS, **owner.auth, "Upload-Length": str(size)}
    if meta:
        headers["Upload-Metadata"] = metadata(**meta)
    return requests.post(endpoint(base), headers=headers, timeout=10)


def patch(url: str, owner: Owner, offset: int, body: bytes, **headers: str) -> requests.Response:
    return requests.patch(
        url,
        data=body,
        headers={**TUS, **CHUNK, **owner.auth, "Upload-Offset": str(offset), **headers},
        timeout=30,
    )


def head(url: str, owner: Owner) -> requests.Response:
    return requests.head(url, headers={**TUS, **owner.auth}, timeout=10)


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def stored(app: Flask, upload_id: str) -> models.TransferFile | None:
    with app.app_context():
        return models.get(upload_id)


def partial_size(media: Path, upload_id: str) -> int:
    return (media / "partial" / f"{upload_id}.part").stat().st_size


@contextmanager
def uploader(base: str, owner: Owner, path: Path, **extra):  # type: ignore[no-untyped-def]
    """tuspy's uploader on an open file (given a path, tuspy never closes the file)."""
    tus = tus_client.TusClient(endpoint(base), headers=owner.auth)
    with open(path, "rb") as stream:
        yield tus.uploader(
            file_stream=stream,
            chunk_size=256 * 1024,  # tuspy's default reads the whole file into one request
            metadata={"filename": path.name},
            upload_checksum=True,  # sha1 per chunk
            **extra,
        )


# -- the real client -----------------------------------------------------------------


def test_tuspy_uploads_a_file_that_becomes_a_verified_file(
    app: Flask, live_server: str, owner: Owner, tmp_path: Path, media: Path
) -> None:
    path = tmp_path / "报告 2026.pdf"
    digest = random_file(path, 3 * 1024 * 1024 + 17)
    with uploader(live_server, owner, path) as upload:
        upload.upload()

    upload_id = upload.url.rsplit("/", 1)[1]
    file = stored(app, upload_id)
    assert file is not None and file.complete
    assert (file.filename, file.size, file.sha256) == (path.name, path.stat().st_size, digest)
    assert sha256_of(media / "files" / upload_id[:2] / upload_id) == digest
    assert not (media / "partial" / f"{upload_id}.part").exists()
    answer = head(upload.url, owner)
    assert answer.headers["Upload-Offset"] == answer.headers["Upload-Length"] == str(file.size)


def test_an_interrupted_upload_resumes_where_it_stopped(
    app: Flask, live_server: str, owner: Owner, tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    digest = random_file(path, 2 * 1024 * 1024)
    with uploader(live_server, owner, path) as first:
        first.upload(stop_at=1024 * 1024)  # the connection "drops" after 1 MiB
    assert head(first.url, owner).headers["Upload-Offset"] == str(1024 * 1024)

    with uploader(live_server, owner, path, url=first.url) as second:  # a new process, say
        assert second.offset == 1024 * 1024
        second.upload()
    file = stored(app, first.url.rsplit("/", 1)[1])
    assert file is not None and file.complete and file.sha256 == digest


def test_a_client_that_vanishes_mid_chunk_keeps_what_arrived(
    app: Flask, live_server: str, owner: Owner, tmp_path: Path
) -> None:
    size = 1024 * 1024
    data = os.urandom(size)
    url = create(live_server, owner, size).headers["Location"]
    target = urlsplit(url)
    sent = 300 * 1024
    with socket.create_connection((target.hostname, target.port)) as sock:
        sock.sendall(
            f"PATCH {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
            f"Tus-Resumable: 1.0.0\r\nAuthorization: Bearer {owner.key}\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
            + data[:sent]
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while (offset := int(head(url, owner).headers["Upload-Offset"])) == 0:
        assert time.monotonic() < deadline, "the server never recorded the bytes that arrived"
        time.sleep(0.05)
    assert 0 < offset <= sent

    answer = patch(url, owner, offset, data[offset:])
    assert answer.status_code == 204
    file = stored(app, url.rsplit("/", 1)[1])
    assert file is not None and file.sha256 == hashlib.sha256(data).hexdigest()


# -- the protocol by hand --------------------------------------------------------------


def test_options_lists_version_extensions_limits_and_checksums(
    live_server: str, app: Flask
) -> None:
    answer = requests.options(endpoint(live_server), timeout=10)
    assert answer.status_code == 204
    assert answer.headers["Tus-Version"] == "1.0.0"
    assert set(answer.headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "checksum",
        "termination",
        "expiration",
    }
    assert answer.headers["Tus-Max-Size"] == str(app.config["TRANSFER_MAX_FILE_SIZE"])
    assert set(answer.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256", "md5"}


def test_a_request_without_tus_resumable_is_refused_with_the_version(
    live_server: str, owner: Owner
) -> None:
    answer = requests.post(
        endpoint(live_server), headers={**owner.auth, "Upload-Length": "10"}, timeout=10
    )
    assert answer.status_code == 412
    assert answer.headers["Tus-Version"] == "1.0.0"
    assert "Tus-Resumable" in answer.json()["message"]


def test_creation_with_upload_takes_the_first_chunk_in_the_post(
    app: Flask, live_server: str, owner: Owner
) -> None:
    data = b"hello, tus"
    answer = requests.post(
        endpoint(live_server),
        data=data,
        headers={
            **TUS,
            **CHUNK,
            **owner.auth,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata(filename="hi.txt", filetype="text/plain"),
        },
        timeout=10,
    )
    assert answer.status_code == 201
    assert answer.headers["Upload-Offset"] == str(len(data))
    file = stored(app, answer.headers["Location"].rsplit("/", 1)[1])
    assert file is not None and file.complete
    assert (file.filename, file.content_type) == ("hi.txt", "text/plain")


def test_an_empty_file_is_complete_at_creation(app: Flask, live_server: str, owner: Owner) -> None:
    answer = create(live_server, owner, 0, filename="empty.txt")
    assert answer.status_code == 201
    file = stored(app, answer.headers["Location"].rsplit("/", 1)[1])
    assert file is not None and file.complete
    assert file.sha256 == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "md5"])
def test_a_chunk_with_a_wrong_checksum_is_discarded_with_460(
    app: Flask, live_server: str, owner: Owner, media: Path, algorithm: str
) -> None:
    url = create(live_server, owner, 8).headers["Location"]
    upload_id = url.rsplit("/", 1)[1]
    assert patch(url, owner, 0, b"abcd", **{"Upload-Checksum": checksum(algorithm, b"abcd")}).ok

    answer = patch(url, owner, 4, b"efgh", **{"Upload-Checksum": checksum(algorithm, b"EFGH")})
    assert answer.status_code == 460
    assert answer.json()["error"] == "Checksum Mismatch"
    assert head(url, owner).headers["Upload-Offset"] == "4"
    assert partial_size(media, upload_id) == 4

    assert patch(url, owner, 4, b"efgh", **{"Upload-Checksum": checksum(algorithm, b"efgh")}).ok
    file = stored(app, upload_id)
    assert file is not None and file.sha256 == hashlib.sha256(b"abcdefgh").hexdigest()


def test_an_unknown_checksum_algorithm_is_a_400(live_server: str, owner: Owner) -> None:
    url = create(live_server, owner, 4).headers["Location"]
    answer = patch(url, owner, 0, b"abcd", **{"Upload-Checksum": "crc32 AAAAAA=="})
    assert answer.status_code == 400
    assert "crc32" in answer.json()["message"]
    assert head(url, owner).headers["Upload-Offset"] == "0"


def test_an_offset_mismatch_is_a_409_that_says_where_the_upload_is(
    live_server: str, owner: Owner
) -> None:
    url = create(live_server, owner, 8).headers["Location"]
    assert patch(url, owner, 0, b"abcd").status_code == 204
    answer = patch(url, owner, 0, b"abcd")  # a retry of a chunk that already arrived
    assert answer.status_code == 409
    assert answer.headers["Upload-Offset"] == "4"
    assert "offset 4" in answer.json()["message"]


def test_a_chunk_must_be_sent_as_offset_octet_stream(live_server: str, owner: Owner) -> None:
    url = create(live_server, owner, 4).headers["Location"]
    answer = patch(url, owner, 0, b"abcd", **{"Content-Type": "application/json"})
    assert answer.status_code == 415
    assert head(url, owner).headers["Upload-Offset"] == "0"


def test_a_body_longer_than_upload_length_is_refused_and_nothing_kept(
    live_server: str, owner: Owner, media: Path
) -> None:
    url = create(live_server, owner, 8).headers["Location"]
    upload_id = url.rsplit("/", 1)[1]
    assert patch(url, owner, 0, b"abcd").ok

    answer = patch(url, owner, 4, b"efghij")  # Content-Length says so up front
    assert answer.status_code == 413
    streamed = patch(url, owner, 4, iter([b"efgh", b"ij"]))  # chunked: found while reading
    assert streamed.status_code == 413
    assert "length" in streamed.json()["message"]
    assert head(url, owner).headers["Upload-Offset"] == "4"
    assert partial_size(media, upload_id) == 4


def test_the_whole_file_must_match_a_declared_sha256(
    app: Flask, live_server: str, owner: Owner, media: Path
) -> None:
    declared = hashlib.sha256(b"what I meant to send").hexdigest()
    url = create(live_server, owner, 8, filename="x.bin", sha256=declared).headers["Location"]
    answer = patch(url, owner, 0, b"abcdefgh")
    assert answer.status_code == 460
    assert "SHA-256" in answer.json()["message"]
    upload_id = url.rsplit("/", 1)[1]
    assert stored(app, upload_id) is None
    assert not list(media.rglob(f"{upload_id}*"))


def test_a_quota_overrun_is_refused_before_any_byte_is_sent(owner_factory: OwnerFactory) -> None:
    app, base, owner = owner_factory(TRANSFER_USER_QUOTA=1000)
    assert create(base, owner, 600).status_code == 201
    answer = create(base, owner, 600)
    assert answer.status_code == 413
    assert "quota" in answer.json()["message"]
    with app.app_context():
        assert models.usage(owner.user_id) == 600


def test_a_file_over_the_maximum_size_is_refused(owner_factory: OwnerFactory) -> None:
    _, base, owner = owner_factory(TRANSFER_MAX_FILE_SIZE=100)
    answer = create(base, owner, 101)
    assert answer.status_code == 413
    assert "at most 100 bytes" in answer.json()["message"]


def test_bad_headers_are_400s_with_a_reason(live_server: str, owner: Owner) -> None:
    headers = {**TUS, **owner.auth}
    cases = [
        {"Upload-Length": "-1"},
        {"Upload-Length": "ten"},
        {},
        {"Upload-Defer-Length": "1"},
        {"Upload-Length": "10", "Upload-Metadata": "filename !!!notbase64"},
        {"Upload-Length": "10", "Upload-Metadata": "filename,filename"},
        {"Upload-Length": "10", "Upload-Metadata": metadata(sha256="xyz")},
    ]
    for extra in cases:
        answer = requests.post(endpoint(live_server), headers={**headers, **extra}, timeout=10)
        assert answer.status_code == 400, extra
        assert answer.json()["message"], extra


def test_names_are_kept_as_text_never_as_paths(
    app: Flask, live_server: str, owner: Owner, media: Path, tmp_path: Path
) -> None:
    answer = create(live_server, owner, 3, filename="../../etc/pass\nwd\u202e.txt")
    upload_id = answer.headers["Location"].rsplit("/", 1)[1]
    file = stored(app, upload_id)
    assert file is not None and file.filename == "pass wd.txt"
    assert patch(answer.headers["Location"], owner, 0, b"abc").ok
    assert (media / "files" / upload_id[:2] / upload_id).exists()
    assert not list(tmp_path.rglob("pass*"))


def test_another_users_upload_does_not_exist_for_them(
    live_server: str, owner: Owner, other: Owner
) -> None:
    url = create(live_server, owner, 4).headers["Location"]
    assert head(url, other).status_code == 404
    assert patch(url, other, 0, b"abcd").status_code == 404
    assert requests.delete(url, headers={**TUS, **other.auth}, timeout=10).status_code == 404
    assert head(url, owner).headers["Upload-Offset"] == "0"


def test_no_credentials_is_refused_and_a_wrong_key_is_a_401(live_server: str, owner: Owner) -> None:
    url = create(live_server, owner, 4).headers["Location"]
    assert requests.head(url, headers=TUS, timeout=10).status_code == 401
    # A state-changing request with no key is a browser's as far as the server
    # can tell, so the CSRF check answers first; either way nothing is created.
    answer = requests.post(endpoint(live_server), headers={**TUS, "Upload-Length": "1"}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"] == "CSRF check failed"
    wrong = {"Authorization": "Bearer " + owner.key[:-4] + "AAAA"}
    answer = requests.post(
        endpoint(live_server), headers={**TUS, **wrong, "Upload-Length": "1"}, timeout=10
    )
    assert answer.status_code == 401


def test_a_browser_session_needs_the_csrf_header(app: Flask, owner: Owner) -> None:
    browser = app.test_client()
    assert log_in(browser, owner.username).status_code == 302
    headers = {**TUS, "Upload-Length": "4"}
    assert browser.post("/api/transfer/uploads", headers=headers).status_code == 400
    answer = browser.post(
        "/api/transfer/uploads", headers={**headers, "X-CSRFToken": csrf_token(browser)}
    )
    assert answer.status_code == 201


def test_termination_deletes_the_upload_and_its_bytes(
    app: Flask, live_server: str, owner: Owner, media: Path
) -> None:
    url = create(live_server, owner, 8).headers["Location"]
    assert patch(url, owner, 0, b"abcd").ok
    answer = requests.delete(url, headers={**TUS, **owner.auth}, timeout=10)
    assert answer.status_code == 204
    assert head(url, owner).status_code == 404
    assert not list(media.rglob(f"{url.rsplit('/', 1)[1]}*"))


def test_an_expired_upload_is_gone_and_cleanup_removes_it(owner_factory: OwnerFactory) -> None:
    app, base, owner = owner_factory(TRANSFER_UPLOAD_EXPIRY=1)
    answer = create(base, owner, 8)
    url = answer.headers["Location"]
    assert "Upload-Expires" in answer.headers
    time.sleep(1.2)
    assert patch(url, owner, 0, b"abcd").status_code == 410
    media = Path(app.config["MEDIA_ROOT"]) / "transfer"
    with app.app_context():
        report = storage.cleanup()
    assert report.expired_uploads == 1
    assert head(url, owner).status_code == 404
    assert not list((media / "partial").iterdir())


def test_two_patches_to_one_upload_cannot_interleave(
    app: Flask, live_server: str, owner: Owner
) -> None:
    url = create(live_server, owner, 8).headers["Location"]
    release = threading.Event()
    started = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"ab"
        started.set()
        release.wait(10)
        yield b"cd"

    first: dict[str, requests.Response] = {}
    thread = threading.Thread(
        target=lambda: first.setdefault("answer", patch(url, owner, 0, slow_body()))  # type: ignore[arg-type]
    )
    thread.start()
    try:
        assert started.wait(10)
        time.sleep(0.2)  # the server is now inside the first PATCH, holding the lock
        second = patch(url, owner, 0, b"WXYZ")
        assert second.status_code == 423
        assert "another request" in second.json()["message"]
    finally:
        release.set()
        thread.join(10)
    assert first["answer"].status_code == 204
    assert patch(url, owner, 4, b"efgh").ok
    file = stored(app, url.rsplit("/", 1)[1])
    assert file is not None and file.sha256 == hashlib.sha256(b"abcdefgh").hexdigest()


def test_a_full_disk_answers_507_and_keeps_what_was_accepted(
    owner_factory: OwnerFactory, tmp_path: Path
) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs to fill: {done.stderr.decode().strip()}")
    try:
        app, base, owner = owner_factory(MEDIA_ROOT=str(mount))
        url = create(base, owner, 4 * 1024 * 1024).headers["Location"]
        assert patch(url, owner, 0, b"x" * 512 * 1024).status_code == 204
        answer = patch(url, owner, 512 * 1024, b"y" * 1024 * 1024)
        assert answer.status_code == 507
        assert "disk is full" in answer.json()["message"]
        assert head(url, owner).headers["Upload-Offset"] == str(512 * 1024)
        upload_id = url.rsplit("/", 1)[1]
        assert partial_size(mount / "transfer", upload_id) == 512 * 1024
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_tuspy_reports_a_refusal(live_server: str, owner: Owner, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    random_file(path, 10)
    tus = tus_client.TusClient(endpoint(live_server), headers={"Authorization": "Bearer nope"})
    with open(path, "rb") as stream, pytest.raises(TusCommunicationError) as refused:
        tus.uploader(file_stream=stream, chunk_size=1024).upload()
    assert refused.value.status_code == 401
