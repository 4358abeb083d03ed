"""A 1 GiB file over HTTP: a tus upload cut off halfway and resumed, then a download cut
off halfway and resumed with Range; SHA-256 compared at both ends."""

from __future__ import annotations

import hashlib
import http.client
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from tusclient import client as tus_client

from apps.transfer import models
from tests.transfer.conftest import Owner, random_file

SIZE = 1 << 30
BLOCK = 1 << 20


@pytest.mark.slow
def test_a_gibibyte_survives_an_interrupted_upload_and_download(
    app: Flask, live_server: str, owner: Owner, tmp_path: Path
) -> None:
    if shutil.disk_usage(tmp_path).free < 4 * SIZE:
        pytest.skip(f"{tmp_path} has less than 4 GiB free for a 1 GiB round trip")
    source = tmp_path / "big.bin"
    digest = random_file(source, SIZE)

    tus = tus_client.TusClient(live_server + "/api/transfer/uploads", headers=owner.auth)
    with open(source, "rb") as stream:
        first = tus.uploader(file_stream=stream, chunk_size=64 * BLOCK, upload_checksum=True)
        first.upload(stop_at=SIZE // 2)  # the connection drops halfway
    with open(source, "rb") as stream:
        second = tus.uploader(
            file_stream=stream, chunk_size=64 * BLOCK, upload_checksum=True, url=first.url
        )
        assert second.offset == SIZE // 2
        second.upload()
    file_id = first.url.rsplit("/", 1)[1]
    with app.app_context():
        stored = models.get(file_id)
    assert stored is not None and stored.complete and stored.sha256 == digest

    target = tmp_path / "back.bin"
    address = urlsplit(live_server)
    path = f"/transfer/files/{file_id}/download"
    with open(target, "wb") as out:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        connection.request("GET", path, headers=owner.auth)
        response = connection.getresponse()
        assert response.status == 200
        while out.tell() < SIZE // 3:
            out.write(response.read(BLOCK))
        connection.close()  # the download drops a third of the way in

        have = out.tell()
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        etag = stored.sha256
        connection.request(
            "GET", path, headers={**owner.auth, "Range": f"bytes={have}-", "If-Range": f'"{etag}"'}
        )
        response = connection.getresponse()
        assert response.status == 206
        assert response.getheader("Content-Range") == f"bytes {have}-{SIZE - 1}/{SIZE}"
        while block := response.read(BLOCK):
            out.write(block)
        connection.close()

    back = hashlib.sha256()
    with open(target, "rb") as f:
        while block := f.read(BLOCK):
            back.update(block)
    assert back.hexdigest() == digest
