"""Downloads: who may have a file, Range and conditional requests, names, share links.

A plain HTTP client (requests) against the app under werkzeug, and the same
requests against gunicorn (gthread and gevent), where bodies go out through
``sendfile`` for whole files and ranges alike.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from flask import Flask

from apps.transfer import models
from project import create_app
from project.db import utcnow
from project.extensions import db
from tests.conftest import csrf_token, free_port, log_in
from tests.servers import Server, server_env, start_server
from tests.transfer.conftest import Owner, make_owner, store_file

DATA = os.urandom(300_000)


def url(base: str, file_id: str) -> str:
    return f"{base}/transfer/files/{file_id}/download"


@pytest.fixture
def file_id(app: Flask, owner: Owner) -> str:
    return store_file(app, owner, "文件传输.bin", DATA, content_type="application/pdf")


def get(address: str, owner: Owner | None, **headers: str) -> requests.Response:
    auth = owner.auth if owner else {}
    return requests.get(address, headers={**auth, **headers}, timeout=30, allow_redirects=False)


def test_the_owner_downloads_the_whole_file_with_safe_headers(
    live_server: str, owner: Owner, file_id: str
) -> None:
    answer = get(url(live_server, file_id), owner)
    assert answer.status_code == 200
    assert answer.content == DATA
    headers = answer.headers
    assert headers["Content-Length"] == str(len(DATA))
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["ETag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert "Last-Modified" in headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"].startswith("sandbox")
    assert headers["Content-Type"] == "application/pdf"
    disposition = headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert f"filename*=UTF-8''{quote('文件传输.bin')}" in disposition
    assert f'filename="download-{file_id[:8]}.bin"' in disposition


@pytest.mark.parametrize(
    ("name", "fallback"),
    [("café au lait.txt", "cafe au lait.txt"), ('say "hi"\\.txt', "say _hi.txt")],
)
def test_the_ascii_fallback_name_keeps_what_it_can(
    app: Flask, live_server: str, owner: Owner, name: str, fallback: str
) -> None:
    file_id = store_file(app, owner, name, b"x")
    disposition = get(url(live_server, file_id), owner).headers["Content-Disposition"]
    assert f'filename="{fallback}"' in disposition


@pytest.mark.parametrize(
    ("header", "status", "start", "stop"),
    [
        ("bytes=0-0", 206, 0, 1),
        ("bytes=-500", 206, len(DATA) - 500, len(DATA)),
        ("bytes=1000-", 206, 1000, len(DATA)),
        ("bytes=100-199", 206, 100, 200),
        ("bytes=299990-400000", 206, 299_990, len(DATA)),  # clipped at the end
        ("bytes=0-0,10-20", 200, 0, len(DATA)),  # several ranges: the whole file
        # RFC 9110: a suffix longer than the file means all of it (it was a 416).
        (f"bytes=-{len(DATA) + 1}", 200, 0, len(DATA)),
        # A Range that does not parse is ignored, not refused (it was a 416).
        ("bytes=abc", 200, 0, len(DATA)),
        ("bytes=5-2", 200, 0, len(DATA)),
        ("pages=1-2", 200, 0, len(DATA)),
    ],
)
def test_ranges(
    live_server: str, owner: Owner, file_id: str, header: str, status: int, start: int, stop: int
) -> None:
    answer = get(url(live_server, file_id), owner, Range=header)
    assert answer.status_code == status
    assert answer.content == DATA[start:stop]
    assert answer.headers["Content-Length"] == str(stop - start)
    if status == 206:
        assert answer.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(DATA)}"


@pytest.mark.parametrize("header", ["bytes=300000-", "bytes=999999-1000000"])
def test_a_range_past_the_end_is_416(
    live_server: str, owner: Owner, file_id: str, header: str
) -> None:
    answer = get(url(live_server, file_id), owner, Range=header)
    assert answer.status_code == 416
    assert answer.headers["Content-Range"] == f"bytes */{len(DATA)}"


def test_if_range_resumes_only_the_same_file(live_server: str, owner: Owner, file_id: str) -> None:
    etag = get(url(live_server, file_id), owner).headers["ETag"]
    same = get(url(live_server, file_id), owner, Range="bytes=10-", **{"If-Range": etag})
    assert (same.status_code, same.content) == (206, DATA[10:])
    changed = get(url(live_server, file_id), owner, Range="bytes=10-", **{"If-Range": '"other"'})
    assert (changed.status_code, changed.content) == (200, DATA)


def test_conditional_requests_answer_304(live_server: str, owner: Owner, file_id: str) -> None:
    first = get(url(live_server, file_id), owner)
    by_etag = get(url(live_server, file_id), owner, **{"If-None-Match": first.headers["ETag"]})
    assert (by_etag.status_code, by_etag.content) == (304, b"")
    by_date = get(
        url(live_server, file_id), owner, **{"If-Modified-Since": first.headers["Last-Modified"]}
    )
    assert by_date.status_code == 304


@pytest.mark.parametrize(
    ("headers", "handed_over"),
    [
        ({}, True),
        ({"Range": "bytes=10-99"}, True),
        ({"Range": "bytes=0-1,5-9"}, False),  # ignored by the app: nginx would honour it
        ({"Range": "bytes=10-", "If-Range": '"other"'}, False),
        ({"If-Match": '"anything"'}, False),  # nginx would judge it by its own validators
    ],
)
def test_with_accel_redirect_nginx_gets_the_body_only_when_it_would_send_the_same(
    make_app: Any, headers: dict[str, str], handed_over: bool
) -> None:
    """Under TRANSFER_ACCEL_REDIRECT the app answers with headers and the file's path for nginx
    (tests/deploy has nginx act on it), except where nginx's answer could differ from its own."""
    app = make_app(TRANSFER_ACCEL_REDIRECT="/_transfer")
    owner = make_owner(app, "alice")
    file_id = store_file(app, owner, "report.pdf", DATA, content_type="application/pdf")
    with app.test_client().get(url("", file_id), headers={**owner.auth, **headers}) as answer:
        answer.get_data()  # read, then closed (with the file it holds open)
    if not handed_over:
        assert "X-Accel-Redirect" not in answer.headers and answer.data
        return
    assert answer.status_code == 200 and answer.data == b""
    assert answer.headers["X-Accel-Redirect"] == f"/_transfer/files/{file_id[:2]}/{file_id}"
    assert answer.headers["Content-Type"] == "application/pdf"
    assert answer.headers["ETag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert answer.headers["Content-Disposition"].startswith("attachment;")
    assert answer.headers["Content-Security-Policy"].startswith("sandbox")
    assert "Content-Range" not in answer.headers and "Accept-Ranges" not in answer.headers


def test_head_gives_the_headers_without_the_body(
    live_server: str, owner: Owner, file_id: str
) -> None:
    answer = requests.head(url(live_server, file_id), headers=owner.auth, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Length"] == str(len(DATA))
    assert answer.content == b""


def test_only_the_owner_may_download(
    live_server: str, owner: Owner, other: Owner, file_id: str
) -> None:
    assert get(url(live_server, file_id), other).status_code == 404
    anonymous = get(url(live_server, file_id), None)
    assert anonymous.status_code == 302
    assert "/accounts/login" in anonymous.headers["Location"]
    assert get(url(live_server, "0" * 32), owner).status_code == 404
    assert get(url(live_server, "../../etc/passwd"), owner).status_code == 404


def test_an_unfinished_upload_cannot_be_downloaded(
    app: Flask, live_server: str, owner: Owner
) -> None:
    from apps.transfer import storage

    with app.app_context():
        upload = storage.start_upload(owner.user_id, filename="half.bin", size=10)
    assert get(url(live_server, upload.id), owner).status_code == 404


# -- share links ---------------------------------------------------------------------


def make_share(app: Flask, owner: Owner, file_id: str, days: int = 7) -> str:
    """Create a link through the file's page, as the owner would; returns the link."""
    browser = app.test_client()
    log_in(browser, owner.username)
    page = browser.post(
        f"/transfer/files/{file_id}",
        data={"csrf_token": csrf_token(browser), "days": str(days)},
    ).get_data(as_text=True)
    start = page.index(f"/transfer/files/{file_id}/download?share=")
    link = page[start : page.index('"', start)]
    return link.replace("&amp;", "&")


def test_a_share_link_lets_anyone_download_until_it_is_revoked(
    app: Flask, live_server: str, owner: Owner, file_id: str
) -> None:
    link = live_server + make_share(app, owner, file_id)
    shared = get(link, None, Range="bytes=0-99")
    assert (shared.status_code, shared.content) == (206, DATA[:100])
    assert get(link.replace("share=", "share=x"), None).status_code == 404

    with app.app_context():
        (share,) = models.list_shares(file_id)
    browser = app.test_client()
    log_in(browser, owner.username)
    browser.post(
        f"/transfer/files/{file_id}/shares/{share.id}/revoke",
        data={"csrf_token": csrf_token(browser)},
    )
    assert get(link, None).status_code == 404


def test_an_expired_share_link_stops_working(
    app: Flask, live_server: str, owner: Owner, file_id: str
) -> None:
    link = live_server + make_share(app, owner, file_id, days=1)
    assert get(link, None).status_code == 200
    with app.app_context():
        db.execute("UPDATE transfer_shares SET expires_at = %s", (utcnow() - timedelta(seconds=1),))
    assert get(link, None).status_code == 404


def test_share_days_are_validated(app: Flask, owner: Owner, file_id: str) -> None:
    browser = app.test_client()
    log_in(browser, owner.username)
    for days in ("0", "365", "soon"):
        page = browser.post(
            f"/transfer/files/{file_id}", data={"csrf_token": csrf_token(browser), "days": days}
        ).get_data(as_text=True)
        assert "download?share=" not in page, days
    with app.app_context():
        assert models.list_shares(file_id) == []


def test_a_share_link_cannot_be_made_without_the_csrf_token(
    app: Flask, owner: Owner, file_id: str
) -> None:
    browser = app.test_client()
    log_in(browser, owner.username)
    answer = browser.post(f"/transfer/files/{file_id}", data={"days": "7"})
    assert answer.status_code == 400
    with app.app_context():
        assert models.list_shares(file_id) == []


def test_deleting_a_file_removes_its_bytes(app: Flask, owner: Owner, file_id: str) -> None:
    browser = app.test_client()
    log_in(browser, owner.username)
    media = Path(app.config["MEDIA_ROOT"]) / "transfer"
    assert list(media.rglob(file_id))
    browser.post(f"/transfer/files/{file_id}/delete", data={"csrf_token": csrf_token(browser)})
    with app.app_context():
        assert models.get(file_id) is None
    assert not list(media.rglob(file_id))


# -- under gunicorn: sendfile for whole files and ranges -----------------------------------


BIG = os.urandom(5 * 1024 * 1024 + 3)


@pytest.fixture(params=["gthread", "gevent"])
def gunicorn(
    request: pytest.FixtureRequest, tmp_path: Path, mysql_database: str, redis_prefix: str
) -> Iterator[tuple[Server, Owner, str]]:
    media = tmp_path / "media"
    env = server_env(request.param, tmp_path, mysql_database, redis_prefix, MEDIA_ROOT=str(media))
    app = create_app(
        "test",
        overrides={"DATABASE_URL": mysql_database, "MEDIA_ROOT": str(media), "REDIS_URL": None},
        environ={},
    )
    owner = make_owner(app, "alice")
    file_id = store_file(app, owner, "big.bin", BIG)
    db.close()
    server = start_server(request.param, env, free_port())
    yield server, owner, file_id
    server.stop()


def test_gunicorn_sends_whole_files_and_ranges_intact(
    gunicorn: tuple[Server, Owner, str],
) -> None:
    server, owner, file_id = gunicorn
    address = url(server.url, file_id)
    assert get(address, owner).content == BIG
    for start, stop in [(0, 1), (1_000_000, len(BIG)), (len(BIG) - 7, len(BIG)), (4095, 4097)]:
        answer = get(address, owner, Range=f"bytes={start}-{stop - 1}")
        assert answer.status_code == 206
        assert answer.content == BIG[start:stop], (start, stop)
    # The connection stays usable after a ranged sendfile (nothing extra was sent).
    with requests.Session() as session:
        session.headers.update(owner.auth)
        for _ in range(3):
            part = session.get(address, headers={"Range": "bytes=10-19"}, timeout=10)
            assert part.content == BIG[10:20]
        assert session.head(address, timeout=10).headers["Content-Length"] == str(len(BIG))


def test_gunicorn_takes_a_tus_upload_across_workers(
    gunicorn: tuple[Server, Owner, str], tmp_path: Path
) -> None:
    """Chunks land on whichever worker accepts them; the file still hashes right."""
    from tusclient import client as tus_client

    server, owner, _ = gunicorn
    source = tmp_path / "up.bin"
    source.write_bytes(BIG)
    tus = tus_client.TusClient(server.url + "/api/transfer/uploads", headers=owner.auth)
    with open(source, "rb") as stream:
        uploader = tus.uploader(file_stream=stream, chunk_size=512 * 1024, upload_checksum=True)
        uploader.upload()
    answer = get(url(server.url, uploader.url.rsplit("/", 1)[1]), owner)
    assert answer.headers["ETag"] == f'"{hashlib.sha256(BIG).hexdigest()}"'
    assert answer.content == BIG
