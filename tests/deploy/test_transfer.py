"""Files through nginx: tus chunks reach the app unbuffered, downloads leave by X-Accel-Redirect.

What a proxy changes for files: it may spool a request body to its own disk
before gunicorn sees a byte (progress that lies, a 50 GiB file on the proxy's
disk), and a download sent by gunicorn holds a thread per slow client. The
shipped config turns both off; these tests watch it happen.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import time
from pathlib import Path

import pytest
from tusclient import client as tus_client

from apps.accounts import apikeys
from apps.transfer import models, storage
from tests.conftest import create_account
from tests.deploy.conftest import Deployment
from tests.transfer.conftest import random_file

MIB = 1 << 20


@pytest.fixture(scope="module")
def key(deployment: Deployment) -> str:
    """An API key of a user on the deployment."""
    with deployment.app_context():
        _, secret = apikeys.create_key(create_account("filer"), "deploy tests")
    return secret


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def file_id_of(upload_url: str) -> str:
    return upload_url.rstrip("/").rsplit("/", 1)[1]


def test_a_200_mib_tus_upload_shows_progress_and_arrives_whole(
    deployment: Deployment, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(deployment.cert))  # tuspy verifies with requests
    size = 200 * MIB
    source = tmp_path / "big.bin"
    digest = random_file(source, size)
    tus = tus_client.TusClient(deployment.url + "/api/transfer/uploads", headers=bearer(key))
    offsets = []
    with open(source, "rb") as stream:
        uploader = tus.uploader(
            file_stream=stream,
            chunk_size=8 * MIB,
            upload_checksum=True,
            metadata={"filename": "big.bin", "sha256": digest},
        )
        while uploader.offset < size:
            uploader.upload_chunk()
            offsets.append(uploader.offset)
    assert offsets == [min(size, (i + 1) * 8 * MIB) for i in range(25)]
    with deployment.app_context():
        stored = models.get(file_id_of(uploader.url))
    assert stored is not None and stored.complete and stored.sha256 == digest


def test_a_tus_chunk_reaches_the_app_while_it_is_still_being_sent(
    deployment: Deployment, key: str
) -> None:
    """proxy_request_buffering off: the app writes the first bytes before the last are sent."""
    data = os.urandom(4 * MIB)
    created = deployment.session().post(
        deployment.url + "/api/transfer/uploads",
        headers={
            **bearer(key),
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(len(data)),
            "Upload-Metadata": "filename c3RyZWFtLmJpbg==",
        },
    )
    assert created.status_code == 201, created.text
    upload_id = file_id_of(created.headers["Location"])
    partial = storage.Storage(deployment.media / "transfer").partial_path(upload_id)

    context = ssl.create_default_context(cafile=str(deployment.cert))
    port = deployment.nginx.layout.https_port
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    connection.putrequest("PATCH", f"/api/transfer/uploads/{upload_id}")
    for name, value in {
        **bearer(key),
        "Tus-Resumable": "1.0.0",
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(len(data)),
    }.items():
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(data[: 2 * MIB])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _size(partial) < MIB:
        time.sleep(0.05)
    seen_mid_request = _size(partial)
    connection.send(data[2 * MIB :])
    response = connection.getresponse()
    assert response.status == 204, response.read()
    assert response.getheader("Upload-Offset") == str(len(data))
    connection.close()
    assert seen_mid_request >= MIB, "nginx held the body back: is proxy_request_buffering off?"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _stored(deployment: Deployment, key: str, data: bytes) -> tuple[str, str]:
    """A finished file of *data* owned by *key*'s user: (its id, its SHA-256)."""
    with deployment.app_context():
        owner = apikeys.authenticate(key)
        assert owner is not None
        upload = storage.start_upload(owner.id, filename="Résumé 2026.pdf", size=len(data))
        done = storage.receive(upload, 0, memoryview_reader(data))
        assert done.complete and done.sha256
        return done.id, done.sha256


def memoryview_reader(data: bytes):  # type: ignore[no-untyped-def]
    position = 0

    def readinto(view: memoryview) -> int:
        nonlocal position
        chunk = data[position : position + len(view)]
        view[: len(chunk)] = chunk
        position += len(chunk)
        return len(chunk)

    return readinto


def upstream_bytes(deployment: Deployment, status: str, path: str) -> tuple[int, int]:
    """(bytes sent to the client, bytes received from gunicorn) of the last such request."""
    for method, uri, code, sent, upstream in reversed(deployment.nginx.access_log):
        if method == "GET" and uri == path and code == status:
            return int(sent), int(upstream)
    raise AssertionError(f"no {status} for {path} in nginx's access log")


def test_downloads_are_sent_by_nginx_with_the_apps_headers_and_ranges(
    deployment: Deployment, key: str
) -> None:
    data = os.urandom(3 * MIB + 17)
    file_id, sha = _stored(deployment, key, data)
    path = f"/transfer/files/{file_id}/download"
    client = deployment.session()

    whole = client.get(deployment.url + path, headers=bearer(key))
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == sha
    headers = whole.headers
    assert "X-Accel-Redirect" not in headers  # nginx acted on it and kept it to itself
    assert headers["ETag"] == f'"{sha}"'
    assert headers["Content-Disposition"].startswith("attachment;")
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%202026.pdf" in headers["Content-Disposition"]
    assert headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    sent, from_gunicorn = upstream_bytes(deployment, "200", path)
    assert sent == len(data) and from_gunicorn < 4096  # gunicorn sent headers, nginx the body

    # A resumed download: If-Range with the app's ETag (the SHA-256) gets the range from nginx.
    ranged = client.get(
        deployment.url + path,
        headers={**bearer(key), "Range": f"bytes={MIB}-", "If-Range": f'"{sha}"'},
    )
    assert ranged.status_code == 206
    assert ranged.headers["Content-Range"] == f"bytes {MIB}-{len(data) - 1}/{len(data)}"
    assert ranged.content == data[MIB:]
    assert ranged.headers["Content-Disposition"] == headers["Content-Disposition"]
    sent, from_gunicorn = upstream_bytes(deployment, "206", path)
    assert sent == len(data) - MIB and from_gunicorn < 4096

    # A stale If-Range gets the whole file; a fresh ETag gets 304 from the app.
    stale = client.get(
        deployment.url + path, headers={**bearer(key), "Range": "bytes=0-9", "If-Range": '"old"'}
    )
    assert stale.status_code == 200 and stale.content == data
    fresh = {**bearer(key), "If-None-Match": f'"{sha}"'}
    unchanged = client.get(deployment.url + path, headers=fresh)
    assert unchanged.status_code == 304

    # Several ranges: the app's rule (the whole file), sent by gunicorn as before.
    several = client.get(deployment.url + path, headers={**bearer(key), "Range": "bytes=0-1,5-9"})
    assert several.status_code == 200 and several.content == data
    assert upstream_bytes(deployment, "200", path)[1] > len(data)


def test_the_internal_location_cannot_be_asked_for(deployment: Deployment, key: str) -> None:
    file_id, _ = _stored(deployment, key, b"secret bytes")
    answer = deployment.session().get(
        f"{deployment.url}/_transfer/files/{file_id[:2]}/{file_id}", headers=bearer(key)
    )
    assert answer.status_code == 404
    assert b"secret bytes" not in answer.content
