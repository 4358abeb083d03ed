"""``manage.py transfer push|pull`` run as a user runs them: a subprocess, its exit code, its files.

The server is real: the TCP fast path in a thread of the test process, or the
web app (``--http``) served by werkzeug. Where a connection has to drop, a
relay between the two cuts it (:class:`Relay`), and where a client has to die
mid-file, it is killed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from apps.transfer import tcp
from tests.transfer.conftest import (
    Owner,
    Run,
    Tls,
    app_and_owner,
    at,
    cli,
    files_of,
    pull_into,
    push_quietly,
    random_file,
    sha256_of,
    start_cli,
)
from tests.transfer.test_tcp import login, push_part, received, running

# make test-fast leaves these out: the CLI as a subprocess moving files: seconds each.
pytestmark = pytest.mark.slow

EMBEDDED = pytest.mark.parametrize("stack", ["embedded"], indirect=True)  # stack-independent


@pytest.fixture
def server(app: Flask) -> Iterator[tcp.TransferServer]:
    with running(app) as started:
        yield started


# -- a relay that can slow or cut connections --------------------------------------------------


class Relay:
    """A TCP relay in front of a server: slows the bytes, cuts the link or garbles a byte.

    Offsets count bytes in one direction (``"up"``: client to server,
    ``"down"``: back) over all connections, in the order they pass. At
    ``cut_after`` the connection carrying that byte is shut on both sides, as
    a dropped link would be (once). The byte at ``corrupt_at`` has a bit
    flipped (once), which TCP's weak checksum can miss on a real network.
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        cut_after: int | None = None,
        corrupt_at: int | None = None,
        direction: str = "up",
        rate: float | None = None,
    ) -> None:
        self.upstream_port, self.direction, self.rate = upstream_port, direction, rate
        self.cut_after, self.corrupt_at = cut_after, corrupt_at
        self.cut = threading.Event()
        self.corrupted = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._counted = 0
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # the listener was closed: the relay is done
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink, direction in ((client, upstream, "up"), (upstream, client, "down")):
                pump = threading.Thread(
                    target=self._pump,
                    args=(source, sink, direction, (client, upstream)),
                    daemon=True,
                )
                pump.start()
                self._threads.append(pump)

    def _pump(
        self, source: socket.socket, sink: socket.socket, direction: str, pair: tuple[Any, Any]
    ) -> None:
        try:
            while data := source.recv(64 * 1024):
                going_on = True
                if direction == self.direction:
                    data, going_on = self._tamper(data)
                if self.rate:
                    time.sleep(len(data) / self.rate)
                sink.sendall(data)
                if not going_on:
                    self._shut(*pair)
                    return
            sink.shutdown(socket.SHUT_WR)
        except OSError:  # the other pump (or close()) shut the pair
            self._shut(*pair)

    def _tamper(self, data: bytes) -> tuple[bytes, bool]:
        """Count *data*; garble it or cut it short where asked. False: cut the link after it."""
        with self._lock:
            start = self._counted
            self._counted += len(data)
        end = start + len(data)
        if self.cut_after is not None and not self.cut.is_set() and end >= self.cut_after:
            self.cut.set()
            return data[: self.cut_after - start], False
        at = self.corrupt_at
        if at is not None and start <= at < end and not self.corrupted.is_set():
            self.corrupted.set()
            garbled = bytearray(data)
            garbled[at - start] ^= 0x01
            data = bytes(garbled)
        return data, True

    @staticmethod
    def _shut(*sockets: socket.socket) -> None:
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._shut(self.listener)  # wakes the accept() that close() alone would not
        self.listener.close()
        with self._lock:
            self._shut(*self._sockets)
        for thread in self._threads:
            thread.join(timeout=10)
        for sock in self._sockets:
            sock.close()


@contextmanager
def relay(port: int, **kwargs: Any) -> Iterator[Relay]:
    started = Relay(port, **kwargs)
    try:
        yield started
    finally:
        started.close()


# -- push and pull -----------------------------------------------------------------------------


def test_push_then_pull_with_the_cli(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "Quarterly report é.bin"
    digest = random_file(source, 6 * 1024 * 1024 + 1)
    pushed = cli(tmp_path, owner.key, "push", str(source), at(server))
    assert pushed.code == 0, pushed.err
    file_id = pushed.out.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", file_id)
    summary = pushed.summary
    assert (summary["verb"], summary["name"], summary["sha256"]) == ("pushed", source.name, digest)
    assert float(summary["rate"]) > 0 and summary["resumed"] is None
    assert "100%" in pushed.err  # the progress bar got to the end

    # The file is on the user's page, like one uploaded in the browser.
    [file] = files_of(app, owner)
    assert (file.id, file.filename, file.sha256, file.complete) == (
        file_id,
        source.name,
        digest,
        True,
    )
    page = app.test_client().get("/transfer/", headers=owner.auth)
    assert page.status_code == 200 and "Quarterly report é.bin" in page.get_data(as_text=True)

    target = tmp_path / "out" / "copy.bin"
    target.parent.mkdir()
    pulled = pull_into(tmp_path, owner, file_id, target, at(server))
    assert pulled.code == 0, pulled.err
    assert pulled.out.strip() == str(target)
    assert pulled.summary["sha256"] == digest and sha256_of(target) == digest
    assert os.listdir(target.parent) == ["copy.bin"]  # no .part left behind


@EMBEDDED
def test_pull_into_a_directory_takes_the_files_own_name(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source, digest, file_id = push_quietly(tmp_path, owner, server.port, "photo.raw", 100_000)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    pulled = pull_into(tmp_path, owner, file_id, downloads, at(server), "-q")
    assert pulled.code == 0 and pulled.err == ""  # --quiet: no bar, no summary
    assert sha256_of(downloads / "photo.raw") == digest


# -- resuming ----------------------------------------------------------------------------------


def test_a_push_resumes_after_the_client_was_killed_mid_file(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "movie.mkv"
    digest = random_file(source, 48 * 1024 * 1024)
    partial = Path(app.config["MEDIA_ROOT"]) / "transfer" / "partial"
    with relay(server.port, rate=16e6) as slow:  # 3 s for the whole file
        proc = start_cli(tmp_path, owner.key, "push", str(source), at(slow.port))
        try:
            deadline = time.monotonic() + 30
            while not any(p.stat().st_size >= 2_000_000 for p in partial.glob("*.part")):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
        finally:
            proc.kill()
            proc.wait()
    [upload] = files_of(app, owner)
    kept = received(app, upload.id)
    assert 2_000_000 <= kept < 48 * 1024 * 1024 and not files_of(app, owner)[0].complete

    again = cli(tmp_path, owner.key, "push", str(source), at(server))
    assert again.code == 0, again.err
    assert f"resuming at byte {kept} " in again.err
    assert int(again.summary["resumed"]) == kept
    assert again.out.strip() == upload.id
    [file] = files_of(app, owner)
    assert file.complete and file.sha256 == digest


def test_a_push_left_unfinished_by_another_client_is_resumed(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "a.bin"
    digest = random_file(source, 3_000_000)
    upload_id = push_part(server.port, owner, source, 1_234_567)
    received(app, upload_id)
    pushed = cli(tmp_path, owner.key, "push", str(source), at(server))
    assert (pushed.code, pushed.out.strip()) == (0, upload_id)
    assert pushed.summary["resumed"] == "1234567" and pushed.summary["moved"] == "1.8 MB"
    assert files_of(app, owner)[0].sha256 == digest


@EMBEDDED
def test_dropped_connections_are_resumed_within_the_same_run(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "data.bin"
    digest = random_file(source, 20 * 1024 * 1024)
    with relay(server.port, cut_after=7_000_000) as link:
        pushed = cli(tmp_path, owner.key, "push", str(source), at(link.port))
    assert pushed.code == 0, pushed.err
    assert link.cut.is_set()
    assert re.search(r"connection lost at byte \d+: .*; retrying in 0.5 s", pushed.err)
    assert 5_000_000 < int(re.findall(r"resuming at byte (\d+)", pushed.err)[0]) <= 7_000_000
    assert pushed.summary["resumed"] is None  # this run started from the first byte
    file_id = pushed.out.strip()

    target = tmp_path / "copy.bin"
    with relay(server.port, cut_after=9_000_000, direction="down") as link:
        pulled = pull_into(tmp_path, owner, file_id, target, at(link.port))
    assert pulled.code == 0, pulled.err
    resumed_at = int(re.findall(r"resuming at byte (\d+)", pulled.err)[0])
    assert 8_000_000 < resumed_at <= 9_000_000
    assert sha256_of(target) == digest


def test_a_pull_continues_a_part_file_and_checks_the_whole(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source, digest, file_id = push_quietly(tmp_path, owner, server.port, "src.bin", 4_000_000)
    target = tmp_path / "copy.bin"
    Path(f"{target}.part").write_bytes(source.read_bytes()[:2_500_000])
    pulled = pull_into(tmp_path, owner, file_id, target, at(server))
    assert pulled.code == 0, pulled.err
    assert pulled.summary["resumed"] == "2500000" and pulled.summary["moved"] == "1.5 MB"
    assert sha256_of(target) == digest and not Path(f"{target}.part").exists()


@EMBEDDED
def test_a_part_file_from_something_else_is_downloaded_again(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source, digest, file_id = push_quietly(tmp_path, owner, server.port, "src.bin", 1_000_000)
    target = tmp_path / "copy.bin"
    Path(f"{target}.part").write_bytes(os.urandom(400_000))  # same name, other bytes
    target.write_bytes(b"the previous version")
    pulled = pull_into(tmp_path, owner, file_id, target, at(server))
    assert pulled.code == 0, pulled.err
    assert "did not belong to this file" in pulled.err
    assert sha256_of(target) == digest


# -- a file that changes under the client ------------------------------------------------------


def rewrite(path: Path, keep_mtime: bool) -> str:
    """New bytes of the same length, in place; returns their SHA-256."""
    before = path.stat()
    data = os.urandom(before.st_size)
    with open(path, "r+b") as f:
        f.write(data)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    return hashlib.sha256(data).hexdigest()


def push_while_changing(
    tmp_path: Path, owner: Owner, port: int, source: Path, keep_mtime: bool
) -> tuple[Run, str]:
    """Push through a link cut at 3 MB; the file is rewritten while the client waits to retry."""
    with relay(port, cut_after=3_000_000) as link:
        proc = start_cli(tmp_path, owner.key, "push", str(source), at(link.port), capture=True)
        assert link.cut.wait(30)
        new_digest = rewrite(source, keep_mtime)  # the first retry comes 0.5 s after the cut
        out, err = proc.communicate(timeout=120)
    return Run(proc.returncode, out, err), new_digest


def test_a_file_changed_between_attempts_is_sent_anew(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    """The old version's upload is not resumed: its first 3 MB are never merged into the new."""
    source = tmp_path / "log.txt"
    random_file(source, 10 * 1024 * 1024)
    run, new_digest = push_while_changing(tmp_path, owner, server.port, source, keep_mtime=False)
    assert run.code == 0, run.err
    assert "changed since it was first looked at: starting over with it" in run.err
    assert run.summary["sha256"] == new_digest and run.summary["resumed"] is None
    files = files_of(app, owner)
    done = [f for f in files if f.complete]
    assert [(f.id, f.sha256) for f in done] == [(run.out.strip(), new_digest)]
    assert len(files) == 2  # and the old version's partial upload, left to expire
    pulled = pull_into(tmp_path, owner, run.out.strip(), tmp_path / "c", at(server))
    assert pulled.code == 0 and sha256_of(tmp_path / "c") == new_digest


@EMBEDDED
def test_a_file_changed_with_its_mtime_put_back_is_noticed_too(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    """Same size and mtime: the inode's ctime, which cannot be set back, still tells."""
    source = tmp_path / "sneaky.bin"
    random_file(source, 10 * 1024 * 1024)
    run, new_digest = push_while_changing(tmp_path, owner, server.port, source, keep_mtime=True)
    assert run.code == 0, run.err
    assert "starting over with it" in run.err and run.summary["sha256"] == new_digest


def test_bytes_garbled_on_the_way_exit_5_and_nothing_is_kept(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "precious.bin"
    random_file(source, 5 * 1024 * 1024)
    with relay(server.port, corrupt_at=3_000_000) as link:
        pushed = cli(tmp_path, owner.key, "push", str(source), at(link.port))
    assert link.corrupted.is_set()
    assert pushed.code == 5, pushed.err
    assert "checksum_mismatch" in pushed.err and pushed.out == ""
    assert files_of(app, owner) == []

    file_id = cli(tmp_path, owner.key, "push", str(source), at(server), "-q").out.strip()
    target = tmp_path / "out" / "precious.bin"
    target.parent.mkdir()
    with relay(server.port, corrupt_at=1_000_000, direction="down") as link:
        pulled = pull_into(tmp_path, owner, file_id, target, at(link.port))
    assert pulled.code == 5, pulled.err
    assert "nothing was kept" in pulled.err and pulled.out == ""
    assert os.listdir(target.parent) == []


# -- refusals and their exit codes -------------------------------------------------------------


@EMBEDDED
def test_keys_the_server_does_not_accept_exit_3_and_bad_usage_exits_2(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "f.bin"
    random_file(source, 1000)
    key_id = owner.key.split("_")[1]
    wrong = cli(tmp_path, f"fmk_{key_id}_{'x' * 43}", "push", str(source), at(server))
    assert wrong.code == 3 and "auth_failed" in wrong.err
    assert cli(tmp_path, "fmk_nonsense", "push", str(source), at(server)).code == 2
    missing = cli(tmp_path, None, "push", str(source), at(server))
    assert missing.code == 2 and "TRANSFER_API_KEY" in missing.err
    assert cli(tmp_path, owner.key, "push", str(tmp_path / "nope"), at(server)).code == 2
    assert cli(tmp_path, owner.key, "pull", "not-an-id", at(server)).code == 2
    assert cli(tmp_path, owner.key, "push", str(source), "--server", "nowhere").code == 2
    assert files_of(app, owner) == []


def test_pulling_an_unknown_file_exits_4_and_writes_nothing(
    server: tcp.TransferServer, owner: Owner, other: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "private.bin"
    random_file(source, 1000)
    file_id = cli(tmp_path, owner.key, "push", str(source), at(server), "-q").out.strip()
    target = tmp_path / "out" / "x.bin"
    target.parent.mkdir()
    for key, wanted in ((owner.key, "0" * 32), (other.key, file_id)):
        run = cli(tmp_path, key, "pull", wanted, "-o", str(target), at(server))
        assert run.code == 4 and "not_found" in run.err and run.out == ""
    assert os.listdir(target.parent) == []


def test_a_push_over_the_quota_exits_7(make_app: Any, tmp_path: Path) -> None:
    app, owner = app_and_owner(make_app, TRANSFER_USER_QUOTA=1_000_000)
    source = tmp_path / "big.bin"
    random_file(source, 1_000_001)
    with running(app) as server:
        run = cli(tmp_path, owner.key, "push", str(source), at(server))
    assert run.code == 7 and "quota" in run.err and run.out == ""
    assert files_of(app, owner) == []


@EMBEDDED
def test_a_busy_server_is_retried_then_exits_6(make_app: Any, tmp_path: Path) -> None:
    app, owner = app_and_owner(make_app, TRANSFER_SERVER_MAX_CLIENTS=1)
    source = tmp_path / "f.bin"
    digest = random_file(source, 1000)
    with running(app) as server:
        holder = login(server.port, owner)
        try:
            run = cli(tmp_path, owner.key, "push", str(source), at(server), "--retries=1")
            assert run.code == 6 and "busy" in run.err and "failed after 2 attempt(s)" in run.err
            proc = start_cli(
                tmp_path, owner.key, "push", str(source), at(server), "-q", capture=True
            )
            time.sleep(1)  # the client is turned away and backs off...
        finally:
            holder.sock.close()  # ...until the slot frees up
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert files_of(app, owner)[0].sha256 == digest and files_of(app, owner)[0].id == out.strip()


@EMBEDDED
def test_no_server_exits_6(owner: Owner, tmp_path: Path) -> None:
    source = tmp_path / "f.bin"
    random_file(source, 10)
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    run = cli(tmp_path, owner.key, "push", str(source), at(port), "--retries=2")
    assert run.code == 6 and "cannot connect to 127.0.0.1" in run.err
    assert run.err.count("retrying in") == 2


# -- TLS ---------------------------------------------------------------------------------------


@EMBEDDED
def test_push_and_pull_over_tls(tls: Tls, tmp_path: Path) -> None:
    app, owner, cert = tls.app, tls.owner, tls.cert
    source = tmp_path / "over-tls.bin"
    digest = random_file(source, 3 * 1024 * 1024)
    with running(app) as server:
        pushed = cli(tmp_path, owner.key, "push", str(source), at(server), "--cafile", str(cert))
        assert pushed.code == 0, pushed.err
        target = tmp_path / "copy.bin"
        pulled = pull_into(
            tmp_path, owner, pushed.out.strip(), target, at(server), "--cafile", str(cert)
        )
        assert pulled.code == 0, pulled.err
        assert sha256_of(target) == digest
        untrusted = cli(tmp_path, owner.key, "push", str(source), at(server), "--tls")
        assert untrusted.code == 6 and "certificate is not trusted" in untrusted.err
        assert untrusted.err.count("retrying") == 0  # not a thing time can fix
        plain = cli(
            tmp_path, owner.key, "push", str(source), at(server), "--timeout=1", "--retries=0"
        )
        assert plain.code == 6 and "pass --tls or --cafile" in plain.err


# -- HTTP: tus and Range -----------------------------------------------------------------------


def test_push_and_pull_over_http(
    app: Flask, live_server: str, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "via http.bin"
    digest = random_file(source, 20 * 1024 * 1024 + 5)  # three PATCHes of 8 MiB or less
    pushed = cli(tmp_path, owner.key, "push", str(source), "--http", live_server)
    assert pushed.code == 0, pushed.err
    file_id = pushed.out.strip()
    [file] = files_of(app, owner)
    assert (file.id, file.filename, file.sha256) == (file_id, "via http.bin", digest)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    pulled = pull_into(tmp_path, owner, file_id, downloads, "--http", live_server)
    assert pulled.code == 0, pulled.err
    assert sha256_of(downloads / "via http.bin") == digest
    assert pulled.summary["sha256"] == digest


@EMBEDDED
def test_http_transfers_resume_after_a_dropped_connection(
    app: Flask, live_server: str, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "flaky.bin"
    digest = random_file(source, 20 * 1024 * 1024)
    port = int(live_server.rsplit(":", 1)[1])
    with relay(port, cut_after=12_000_000) as link:  # in the second PATCH
        pushed = cli(
            tmp_path, owner.key, "push", str(source), "--http", f"http://127.0.0.1:{link.port}"
        )
    assert pushed.code == 0, pushed.err
    assert "resuming at byte 8388608 " in pushed.err  # the first 8 MiB chunk was kept
    assert files_of(app, owner)[0].sha256 == digest

    target = tmp_path / "copy.bin"
    with relay(port, cut_after=5_000_000, direction="down") as link:
        pulled = pull_into(
            tmp_path, owner, pushed.out.strip(), target, "--http", f"http://127.0.0.1:{link.port}"
        )
    assert pulled.code == 0, pulled.err
    assert re.search(r"resuming at byte \d{7} ", pulled.err)
    assert sha256_of(target) == digest


@EMBEDDED
def test_http_push_resumes_in_a_later_run(
    app: Flask, live_server: str, owner: Owner, tmp_path: Path
) -> None:
    """After a run gave up, the next finds the upload's URL in its cache and asks where it is."""
    source = tmp_path / "later.bin"
    digest = random_file(source, 24 * 1024 * 1024)
    port = int(live_server.rsplit(":", 1)[1])
    with relay(port, cut_after=10_000_000) as link:  # the cache knows uploads by server URL
        url = f"http://127.0.0.1:{link.port}"
        first = cli(tmp_path, owner.key, "push", str(source), "--http", url, "--retries=0")
        assert first.code == 6
        second = cli(tmp_path, owner.key, "push", str(source), "--http", url)
    assert second.code == 0, second.err
    assert second.summary["resumed"] == str(8 * 1024 * 1024)
    [file] = files_of(app, owner)
    assert file.sha256 == digest and file.id == second.out.strip()


@EMBEDDED
def test_http_errors_have_the_same_exit_codes(
    app: Flask, live_server: str, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "f.bin"
    random_file(source, 1000)
    key_id = owner.key.split("_")[1]
    wrong = cli(tmp_path, f"fmk_{key_id}_{'x' * 43}", "push", str(source), "--http", live_server)
    assert wrong.code == 3, wrong.err
    missing = cli(tmp_path, owner.key, "pull", "0" * 32, "--http", live_server)
    assert missing.code == 4, missing.err


# -- 1 GiB, interrupted both ways --------------------------------------------------------------


def wait_and_kill(proc: subprocess.Popen[str], path_glob: tuple[Path, str], size: int) -> None:
    """Kill *proc* once a file matching the glob holds *size* bytes (the midpoint)."""
    directory, pattern = path_glob
    deadline = time.monotonic() + 300
    try:
        while not any(p.stat().st_size >= size for p in directory.glob(pattern)):
            assert proc.poll() is None, "the transfer ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
@EMBEDDED
def test_one_gibibyte_pushed_and_pulled_with_an_interruption_each_way(
    app: Flask, server: tcp.TransferServer, owner: Owner, tmp_path: Path
) -> None:
    size = 1024**3
    free = shutil.disk_usage(tmp_path).free
    if free < 3 * size:
        pytest.skip(f"needs 3 GiB free in {tmp_path} (source, server copy, download); has {free}")
    source = tmp_path / "one.gib"
    digest = random_file(source, size)

    proc = start_cli(tmp_path, owner.key, "push", str(source), at(server), "-q")
    wait_and_kill(
        proc, (Path(app.config["MEDIA_ROOT"]) / "transfer" / "partial", "*.part"), size // 2
    )
    [upload] = files_of(app, owner)
    kept = received(app, upload.id)
    pushed = cli(tmp_path, owner.key, "push", str(source), at(server), timeout=600)
    assert pushed.code == 0, pushed.err
    assert int(pushed.summary["resumed"]) == kept >= size // 2
    assert files_of(app, owner)[0].sha256 == digest

    target = tmp_path / "copy.gib"
    proc = start_cli(tmp_path, owner.key, "pull", upload.id, "-o", str(target), at(server), "-q")
    wait_and_kill(proc, (tmp_path, "copy.gib.part"), size // 2)
    part_size = Path(f"{target}.part").stat().st_size
    pulled = cli(tmp_path, owner.key, "pull", upload.id, "-o", str(target), at(server), timeout=600)
    assert pulled.code == 0, pulled.err
    assert int(pulled.summary["resumed"]) == part_size >= size // 2
    assert sha256_of(target) == digest
    for run in (pushed, pulled):  # the speed of the resumed halves, for the record
        print(run.summary.group(0), file=sys.stderr)
