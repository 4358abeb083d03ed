"""Live upload events across processes: gunicorn workers and ``manage.py transfer-server``.

The web app (gunicorn, two workers, MariaDB + Redis) and the TCP fast path
(its own process) share only the database, the volume and Redis: a push to
the transfer server must reach the pages open on every worker, and so must
a tus upload taken by any worker. On the embedded stack (``runserver`` and a
``transfer-server`` beside it, no Redis) there is no channel between the two
processes: the transfer server says so when it starts, and the pages see
the pushed file when they next read the list.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests
from tusclient import client as tus_client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import free_port, mysql_admin
from tests.realtime.test_chat import login_cookie
from tests.servers import ROOT, Server, create_users, server_env, start_server
from tests.transfer.conftest import cli, random_file

# make test-fast leaves these out: gunicorn and the transfer server as processes: seconds each.
pytestmark = pytest.mark.slow

MiB = 1024 * 1024
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
SOCKETS = 6  # on two workers, six handshakes all landing on one is 1 in 32


def api_key(env: dict[str, str], username: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "apikey", "create", username, "--label", "laptop"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    match = re.search(r"fmk_[0-9a-f]{16}_\S+", done.stdout)
    assert match, done.stdout
    return match.group(0)


class TransferServerProcess:
    """``manage.py transfer-server`` on a free port, its output kept in a log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "transfer-server", "--host", "127.0.0.1",
                 "--port", "0"],
                cwd=ROOT, env=env, stdout=out, stderr=out,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while not (match := LISTENING.search(self.output)):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.output
            time.sleep(0.1)
        self.port = int(match[1])

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


@pytest.fixture(params=["gthread", "gevent"])
def cluster(
    request: pytest.FixtureRequest, tmp_path: Path, mysql_database: str, redis_prefix: str
) -> Iterator[tuple[Server, TransferServerProcess, str]]:
    """gunicorn (two workers) and a transfer server sharing MariaDB and Redis; alice's key."""
    env = server_env(
        request.param, tmp_path, mysql_database, redis_prefix, GUNICORN_WORKERS="2",
        MEDIA_ROOT=str(tmp_path / "media"),
    )  # fmt: skip
    create_users(env, "alice", "bob")
    web = start_server(request.param, env, free_port())
    tcp = TransferServerProcess(env, tmp_path / "transfer-server.log")
    yield web, tcp, api_key(env, "alice")
    tcp.stop()
    web.stop()


def open_pages(stack: ExitStack, web: Server, username: str, count: int) -> list[ClientConnection]:
    cookie = login_cookie(web.url, username)
    pages = []
    for _ in range(count):
        ws = stack.enter_context(connect(web.ws + "/ws/me", additional_headers={"Cookie": cookie}))
        ws.ping().wait(5)  # answered once its handler has subscribed
        pages.append(ws)
    return pages


def until(ws: ClientConnection, kind: str, timeout: float = 20) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1]["type"] != kind:
        seen.append(json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic()))))
    return seen


def quiet(ws: ClientConnection, seconds: float = 0.6) -> list[Any]:
    try:
        return [ws.recv(timeout=seconds)]
    except TimeoutError:
        return []


def test_a_push_to_the_transfer_server_reaches_pages_on_every_worker(
    cluster: tuple[Server, TransferServerProcess, str], tmp_path: Path
) -> None:
    web, tcp, key = cluster
    source = tmp_path / "laptop.img"
    digest = random_file(source, 12 * MiB)
    with ExitStack() as stack:
        pages = open_pages(stack, web, "alice", SOCKETS)
        (bob,) = open_pages(stack, web, "bob", 1)
        pushed = cli(tmp_path, key, "push", str(source), f"--server=127.0.0.1:{tcp.port}", "-q")
        assert pushed.code == 0, pushed.err
        file_id = pushed.out.strip()
        for ws in pages:
            events = until(ws, "transfer.complete")
            offsets = [e["offset"] for e in events if e["type"] == "transfer.progress"]
            assert offsets and offsets == sorted(offsets) and offsets[-1] == 12 * MiB
            assert events[-1]["file"]["id"] == file_id
            assert events[-1]["file"]["sha256"] == digest
        assert quiet(bob) == []
    assert "no REDIS_URL" not in tcp.output


def test_a_tus_upload_to_one_worker_reaches_pages_on_every_worker_then_1001_on_stop(
    cluster: tuple[Server, TransferServerProcess, str], tmp_path: Path
) -> None:
    web, _, key = cluster
    path = tmp_path / "chunks.bin"
    random_file(path, 2 * MiB)
    with ExitStack() as stack:
        pages = open_pages(stack, web, "alice", SOCKETS)
        tus = tus_client.TusClient(
            web.url + "/api/transfer/uploads", headers={"Authorization": f"Bearer {key}"}
        )
        with open(path, "rb") as stream:
            uploader = tus.uploader(
                file_stream=stream, chunk_size=512 * 1024, metadata={"filename": path.name}
            )
            uploader.upload()
        upload_id = uploader.url.rsplit("/", 1)[1]
        for ws in pages:
            assert until(ws, "transfer.complete")[-1]["file"]["id"] == upload_id
        web.stop()  # SIGTERM: every socket is told the server is going away
        for ws in pages:
            with pytest.raises(ConnectionClosed):
                while True:
                    # A worker that took an earlier chunk may send its trailing offset after
                    # the file: events of one upload come from several processes, unordered.
                    late = json.loads(ws.recv(timeout=10))
                    assert late["type"] == "transfer.progress" and late["upload"] == upload_id
            assert ws.close_code == 1001


def test_without_redis_the_transfer_server_says_pushes_are_not_live(tmp_path: Path) -> None:
    """The embedded stack: one runserver, and the transfer server in a process of its own. The
    in-process broker cannot reach across: the server says so; a tus upload to runserver is live."""
    env = server_env("runserver", tmp_path, None, None, MEDIA_ROOT=str(tmp_path / "media"))
    create_users(env, "alice")
    web = start_server("runserver", env, free_port())
    tcp = TransferServerProcess(env, tmp_path / "transfer-server.log")
    try:
        assert "live events between processes need Redis" in tcp.output
        key = api_key(env, "alice")
        with ExitStack() as stack:
            (page,) = open_pages(stack, web, "alice", 1)
            tus = tus_client.TusClient(
                web.url + "/api/transfer/uploads", headers={"Authorization": f"Bearer {key}"}
            )
            path = tmp_path / "here.bin"
            random_file(path, 300 * 1024)
            with open(path, "rb") as stream:
                tus.uploader(file_stream=stream, chunk_size=1 << 20).upload()
            until(page, "transfer.complete")
            source = tmp_path / "there.bin"
            random_file(source, 300 * 1024)
            pushed = cli(tmp_path, key, "push", str(source), f"--server=127.0.0.1:{tcp.port}")
            assert pushed.code == 0, pushed.err
            assert quiet(page, 1.0) == []  # what the server warned of
    finally:
        tcp.stop()
        web.stop()


def test_transfer_cleanup_in_its_own_process_tells_the_pages_of_an_expired_upload(
    cluster: tuple[Server, TransferServerProcess, str], mysql_database: str
) -> None:
    """A short-lived command raises events too: they are published before it exits."""
    web, _, key = cluster
    created = requests.post(
        web.url + "/api/transfer/uploads",
        headers={"Tus-Resumable": "1.0.0", "Upload-Length": "8",
                 "Authorization": f"Bearer {key}"},
        timeout=10,
    )  # fmt: skip
    assert created.status_code == 201
    upload_id = created.headers["Location"].rsplit("/", 1)[1]
    database = mysql_database.rsplit("/", 1)[1]
    admin = mysql_admin()
    with admin.cursor() as cur:  # a day has passed without a byte
        cur.execute(
            f"UPDATE `{database}`.transfer_files SET expires_at = '2000-01-01' WHERE id = %s",
            (upload_id,),
        )
    admin.close()
    with ExitStack() as stack:
        (page,) = open_pages(stack, web, "alice", 1)
        subprocess.run(
            [sys.executable, "manage.py", "transfer", "cleanup"],
            cwd=ROOT, env=web.env, check=True, capture_output=True,
        )  # fmt: skip
        failed = until(page, "transfer.failed")[-1]
    assert (failed["upload"], failed["code"]) == (upload_id, "expired")
