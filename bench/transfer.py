"""Moving one large file: our TCP fast path and HTTP paths beside a raw baseline and the seed.

**Question:** how close do our transfers come to what the machine can do,
and how much faster are they than the seed tutorial's protocol?

**How**, in one run, on the same file (``--size`` MiB of random bytes, 1 GiB
by default), every destination on tmpfs (``/dev/shm``) so the disk does not
dominate, every receiver writing the bytes to a file and hashing them:

(a) **raw baseline**: ``socket.sendfile`` to a receiver in another process
    that loops ``recv_into`` a 1 MiB buffer, writes and SHA-256s each block;
(b) **seed protocol** (``../shared/seeds/001``): a ``struct``-packed length,
    a JSON header, then ``f.read(4096)`` + ``send`` against ``recv(4096)``,
    with MD5 on the receiver;
(c) **our TCP PUSH and PULL**: ``manage.py transfer-server`` and our client
    (:mod:`apps.transfer.client`), HMAC handshake included;
(d) **tus upload** through gunicorn (production settings, gthread) with the
    ``tuspy`` client, 64 MiB chunks;
(e) **HTTP download** through gunicorn, whole and ranged (``Range: bytes=1-``,
    which werkzeug alone would send in 8 KiB blocks), read with ``http.client``
    into a 1 MiB buffer, written and SHA-256'd. In each round they run in the
    order whole, ranged, ranged, whole, and the other way round in the next; with
    ``--cold`` the stored file's pages are dropped from the page cache
    (``posix_fadvise(DONTNEED)``) before each, which only means something off
    tmpfs (``--no-tmpfs``): the report then says how many pages stayed.

Each is run ``--rounds`` times (3); the table gives the median MB/s (and all
runs), then the issue's ratios (c)/(a), (c)/(b), (d)/(a), (e)/(a). Every
result is checked: the digest at the far end must equal the file's.
Server and client share the machine's cores, so these are loopback figures.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import multiprocessing
import os
import secrets
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from apps.transfer import client  # no Flask, no settings: safe to import before the stack is up
from bench._harness import (
    REPO_ROOT,
    bench_database,
    free_port,
    gunicorn_env,
    gunicorn_server,
    log,
    run_main,
)

BLOCK = 1 << 20
SEED_BLOCK = 4096
TMPFS = Path("/dev/shm")


@dataclass
class Result:
    label: str
    runs: list[float] = field(default_factory=list)  # MB/s

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


# -- the file ------------------------------------------------------------------------


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(BLOCK, left))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


# -- (a) raw baseline and (b) the seed's protocol: receivers in a child process --------


def _raw_receiver(listener: socket.socket, target: str, size: int, queue: Any) -> None:
    conn, _ = listener.accept()
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    with conn, open(target, "wb") as out:
        left = size
        while left:
            n = conn.recv_into(view[: min(BLOCK, left)])
            if not n:
                break
            out.write(view[:n])
            digest.update(view[:n])
            left -= n
    queue.put(digest.hexdigest())


def _seed_receiver(listener: socket.socket, target: str, size: int, queue: Any) -> None:
    """The seed's client.py (with its MD5 from the later section), receiving."""
    conn, _ = listener.accept()
    with conn:
        header_length = struct.unpack("i", conn.recv(4))[0]
        header = json.loads(conn.recv(header_length).decode("utf-8"))
        md5 = hashlib.md5()  # noqa: S324 - the seed's check, measured as it is
        with open(target, "wb") as f:
            while header["filesize"]:
                content = conn.recv(SEED_BLOCK)
                if not content:
                    break
                header["filesize"] -= len(content)
                f.write(content)
                md5.update(content)
    queue.put(md5.hexdigest())


def _time_socket_transfer(
    receiver: Callable[..., None], send: Callable[[socket.socket], None], target: Path, size: int
) -> tuple[float, str]:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        child = context.Process(target=receiver, args=(listener, str(target), size, queue))
        child.start()
        started = time.perf_counter()
        with socket.create_connection(listener.getsockname()) as sock:
            send(sock)
            digest = queue.get(timeout=600)
        elapsed = time.perf_counter() - started
        child.join(30)
    return elapsed, digest


def raw_baseline(source: Path, target: Path, size: int) -> tuple[float, str]:
    def send(sock: socket.socket) -> None:
        with open(source, "rb") as f:
            sock.sendfile(f)

    return _time_socket_transfer(_raw_receiver, send, target, size)


def seed_protocol(source: Path, target: Path, size: int) -> tuple[float, str]:
    def send(sock: socket.socket) -> None:
        header = json.dumps({"filename": source.name, "filesize": size}).encode("utf-8")
        sock.sendall(struct.pack("i", len(header)))
        sock.sendall(header)
        with open(source, "rb") as f:
            while content := f.read(SEED_BLOCK):
                sock.sendall(content)  # the seed's send() could drop bytes; sendall cannot

    return _time_socket_transfer(_seed_receiver, send, target, size)


# -- the app: a database, an API key, gunicorn, the TCP server ------------------------


@dataclass
class Stack:
    env: dict[str, str]
    key: str
    http_port: int
    tcp_port: int


@contextlib.contextmanager
def app_stack(args: argparse.Namespace, workdir: Path) -> Iterator[Stack]:
    with bench_database(args.mysql_url, "bench_transfer_") as database:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("APP_ENV", "DATABASE_URL", "REDIS_URL", "MEDIA_ROOT"))
        }
        env.update(
            APP_ENV="production",
            SECRET_KEY=secrets.token_urlsafe(48),
            SITE_URL="http://127.0.0.1",
            DATABASE_URL=database.app_url,
            MEDIA_ROOT=str(workdir / "media"),
            TRANSFER_SERVER_HOST="127.0.0.1",
            TRANSFER_SERVER_PORT=str(free_port()),
        )
        manage = [sys.executable, "manage.py"]
        subprocess.run(
            [*manage, "migrate"], cwd=REPO_ROOT, env=env, check=True, capture_output=True
        )
        key = create_key(env)
        http_port = free_port()
        genv = gunicorn_env(env, http_port, args.workers, args.threads)
        with (
            gunicorn_server(
                "project.wsgi:app", genv, http_port, workdir / "gunicorn.log", "/healthz"
            ),
            tcp_server(env, workdir / "tcp.log"),
        ):
            yield Stack(env, key, http_port, int(env["TRANSFER_SERVER_PORT"]))


def create_key(env: dict[str, str]) -> str:
    """A user and an API key, made with the app itself (not over HTTP)."""
    code = (
        "from project import create_app\n"
        "from apps.accounts.models import create_user\n"
        "from apps.accounts.passwords import hash_password\n"
        "from apps.accounts import apikeys\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    user = create_user('bench', 'bench@example.com', hash_password('Bench-Bench-42'))\n"
        "    print(apikeys.create_key(user.id, 'bench')[1])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, check=True, capture_output=True
    )
    return done.stdout.decode().strip().splitlines()[-1]


@contextlib.contextmanager
def tcp_server(env: dict[str, str], log_path: Path) -> Iterator[None]:
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "transfer-server"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", int(env["TRANSFER_SERVER_PORT"])), 1).close()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the transfer server did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- (c) our TCP path ------------------------------------------------------------------


def _client_options(stack: Stack) -> client.Options:
    return client.Options(key=stack.key, server=("127.0.0.1", stack.tcp_port), progress=False)


def tcp_push(stack: Stack, source: Path) -> tuple[float, str, str]:
    """Push with our client in this process, as the CLI does: the SHA-256 is computed while
    sending and goes in a trailer. Returns (seconds, file id, the SHA-256 the server verified).
    """
    started = time.perf_counter()
    outcome = client.push(_client_options(stack), source)
    return time.perf_counter() - started, outcome.file_id, outcome.sha256


def tcp_pull(stack: Stack, file_id: str, target: Path) -> tuple[float, str]:
    """Pull into *target* (hashed as it arrives, renamed into place when verified)."""
    started = time.perf_counter()
    outcome = client.pull(_client_options(stack), file_id, target)
    elapsed = time.perf_counter() - started
    return elapsed, outcome.sha256


# -- (d) tus upload and (e) HTTP download through gunicorn -----------------------------


def tus_upload(stack: Stack, source: Path) -> tuple[float, str]:
    from tusclient import client as tus_client

    endpoint = f"http://127.0.0.1:{stack.http_port}/api/transfer/uploads"
    tus = tus_client.TusClient(endpoint, headers={"Authorization": f"Bearer {stack.key}"})
    started = time.perf_counter()
    with open(source, "rb") as stream:
        uploader = tus.uploader(
            file_stream=stream, chunk_size=64 * BLOCK, metadata={"filename": source.name}
        )
        uploader.upload()
    assert uploader.url, "tuspy finished without an upload URL"
    return time.perf_counter() - started, uploader.url.rsplit("/", 1)[1]


def tus_sendfile_upload(stack: Stack, source: Path, chunk: int = 64 * BLOCK) -> tuple[float, str]:
    """The same tus upload with a client that costs nothing: ``sendfile`` per PATCH.

    Beside tuspy's figure this splits the time: what is left here is the server's.
    """
    size = source.stat().st_size
    auth = {"Authorization": f"Bearer {stack.key}", "Tus-Resumable": "1.0.0"}
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=60)
    try:
        name = base64.b64encode(source.name.encode()).decode()
        connection.request(
            "POST",
            "/api/transfer/uploads",
            headers={**auth, "Upload-Length": str(size), "Upload-Metadata": f"filename {name}"},
        )
        created = connection.getresponse()
        created.read()
        if created.status != 201:
            raise RuntimeError(f"tus creation answered {created.status}")
        path = urlsplit(created.headers["Location"]).path
        with open(source, "rb") as stream:
            for offset in range(0, size, chunk):
                length = min(chunk, size - offset)
                connection.putrequest("PATCH", path)
                for header, value in {
                    **auth,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(length),
                }.items():
                    connection.putheader(header, value)
                connection.endheaders()
                connection.sock.sendfile(stream, offset, length)
                answer = connection.getresponse()
                answer.read()
                if answer.status != 204:
                    raise RuntimeError(f"tus PATCH answered {answer.status}")
    finally:
        connection.close()
    return time.perf_counter() - started, path.rsplit("/", 1)[1]


def http_download(stack: Stack, file_id: str, target: Path, start: int = 0) -> tuple[float, str]:
    """GET the file (from *start* with a Range) into *target*; returns (seconds, sha256 of it)."""
    headers = {"Authorization": f"Bearer {stack.key}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=60)
    try:
        connection.request("GET", f"/transfer/files/{file_id}/download", headers=headers)
        response = connection.getresponse()
        if response.status != (206 if start else 200):
            raise RuntimeError(f"download answered {response.status}: {response.read()[:200]!r}")
        with open(target, "wb") as out:
            while n := response.readinto(view):
                out.write(view[:n])
                digest.update(view[:n])
    finally:
        connection.close()
    return time.perf_counter() - started, digest.hexdigest()


def drop_cached_pages(root: Path) -> int:
    """Ask the kernel to drop the cached pages of every file under *root*; pages left after.

    tmpfs pages are the files themselves and cannot be dropped; on a disk the
    next read comes from the disk ("cold").
    """
    left = 0
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            left += _resident_pages(fd, path.stat().st_size)
        finally:
            os.close(fd)
    return left


def _resident_pages(fd: int, size: int) -> int:
    """Pages of the open file in the page cache (mincore over a read-only mapping)."""
    import ctypes
    import mmap

    if size == 0:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        return -1
    try:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vector = ctypes.create_string_buffer(pages)
        if libc.mincore(ctypes.c_void_p(address), size, vector) != 0:
            return -1
        return sum(byte & 1 for byte in vector.raw)
    finally:
        libc.munmap(ctypes.c_void_p(address), size)


# -- the run ---------------------------------------------------------------------------


def check(label: str, got: str, expected: str) -> None:
    if got != expected:
        raise RuntimeError(f"{label}: the far end's digest {got} is not the file's {expected}")


def run(args: argparse.Namespace) -> dict[str, Result]:
    size = args.size * BLOCK
    mb = size / 1e6
    root = TMPFS if TMPFS.is_dir() and not args.no_tmpfs else Path(tempfile.gettempdir())
    if args.no_tmpfs and args.dir:
        root = args.dir
    free = shutil.disk_usage(root).free
    if free < 5 * size:
        raise RuntimeError(
            f"{root} has {free / 1e9:.1f} GB free; this run needs {5 * mb / 1e3:.1f}"
        )
    results = {
        key: Result(label)
        for key, label in [
            ("raw", "(a) raw: sendfile -> recv_into + SHA-256"),
            ("seed", "(b) seed protocol: 4 KB send/recv + MD5"),
            ("push", "(c) ours, TCP PUSH (HMAC, SHA-256 verified)"),
            ("pull", "(c) ours, TCP PULL (HMAC, SHA-256 verified)"),
            ("tus", "(d) tus upload via gunicorn (tuspy, 64 MiB chunks)"),
            ("tus-sendfile", "(d) tus upload via gunicorn, `sendfile` client (64 MiB PATCHes)"),
            ("get", "(e) HTTP download via gunicorn, whole"),
            ("range", "(e) HTTP download via gunicorn, `Range: bytes=1-`"),
        ]
    }
    with tempfile.TemporaryDirectory(prefix="bench_transfer_", dir=root) as tmp:
        workdir = Path(tmp)
        source = workdir / "source.bin"
        log(f"writing {args.size} MiB of random bytes to {source}")
        sha256 = make_file(source, size)
        md5 = file_digest(source, "md5")
        received = workdir / "received.bin"
        by_position: dict[tuple[str, bool], list[float]] = {
            (key, ends): [] for key in ("get", "range") for ends in (True, False)
        }
        cache_left: list[int] = []
        with app_stack(args, workdir) as stack:
            for round_ in range(1, args.rounds + 1):
                log(f"round {round_}/{args.rounds}")
                seconds, digest = raw_baseline(source, received, size)
                check("raw", digest, sha256)
                results["raw"].runs.append(mb / seconds)
                seconds, digest = seed_protocol(source, received, size)
                check("seed", digest, md5)
                results["seed"].runs.append(mb / seconds)
                received.unlink()

                seconds, file_id, digest = tcp_push(stack, source)
                check("push", digest, sha256)
                results["push"].runs.append(mb / seconds)
                seconds, digest = tcp_pull(stack, file_id, received)
                check("pull", digest, sha256)
                results["pull"].runs.append(mb / seconds)
                received.unlink()

                seconds, sendfile_id = tus_sendfile_upload(stack, source)
                results["tus-sendfile"].runs.append(mb / seconds)
                delete_files(stack, [sendfile_id])
                seconds, tus_id = tus_upload(stack, source)
                results["tus"].runs.append(mb / seconds)
                order = ("get", "range", "range", "get")
                if round_ % 2 == 0:  # every other round the ranged one goes first
                    order = ("range", "get", "get", "range")
                for position, key in enumerate(order):
                    if args.cold:
                        cache_left.append(drop_cached_pages(workdir / "media"))
                    start = 1 if key == "range" else 0
                    seconds, digest = http_download(stack, tus_id, received, start=start)
                    if not start:
                        check("tus/get", digest, sha256)
                    results[key].runs.append((size - start) / 1e6 / seconds)
                    by_position[(key, position == 0)].append((size - start) / 1e6 / seconds)
                received.unlink()
                delete_files(stack, [file_id, tus_id])
        print(report(results, args, root))
        print(download_orders(by_position, results["raw"].median, args, cache_left))
    return results


def download_orders(
    by_position: dict[tuple[str, bool], list[float]],
    raw: float,
    args: argparse.Namespace,
    cache_left: list[int],
) -> str:
    """Whole and ranged downloads, first after the upload or later (the order alternates)."""
    cache = "warm (just uploaded)"
    if args.cold:
        cache = f"cold: cache dropped before each ({max(cache_left, default=0)} pages stayed)"
    lines = [
        "",
        "Downloads in the order whole, ranged, ranged, whole (odd rounds) or ranged, whole,"
        f" whole, ranged (even rounds); page cache {cache}",
        "",
        "| download | first after the upload, MB/s | later, MB/s | / raw, all |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label in (("get", "whole"), ("range", "ranged")):
        ends, middle = by_position[(key, True)], by_position[(key, False)]
        everything = ends + middle
        lines.append(
            f"| {label} | {statistics.median(ends) if ends else 0:.0f} "
            f"| {statistics.median(middle) if middle else 0:.0f} "
            f"| {statistics.median(everything) / raw if everything else 0:.2f}x |"
        )
    return "\n".join(lines)


def delete_files(stack: Stack, ids: list[str]) -> None:
    """Free tmpfs between rounds (through tus termination, which deletes a finished file too)."""
    for file_id in ids:
        connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=30)
        try:
            connection.request(
                "DELETE",
                f"/api/transfer/uploads/{file_id}",
                headers={"Authorization": f"Bearer {stack.key}", "Tus-Resumable": "1.0.0"},
            )
            connection.getresponse().read()
        finally:
            connection.close()


def report(results: dict[str, Result], args: argparse.Namespace, root: Path) -> str:
    raw, seed = results["raw"].median, results["seed"].median
    lines = [
        f"{args.size} MiB of random bytes, source and destinations on {root}; "
        f"{args.rounds} rounds; gunicorn gthread {args.workers or 'default'} workers; "
        f"{os.cpu_count()} cores; MB = 10^6 bytes",
        "",
        "| path | MB/s (median) | runs | / raw (a) |",
        "| --- | ---: | --- | ---: |",
    ]
    for result in results.values():
        runs = ", ".join(f"{r:.0f}" for r in result.runs)
        lines.append(
            f"| {result.label} | {result.median:.0f} | {runs} | {result.median / raw:.2f}x |"
        )
    push, pull = results["push"].median, results["pull"].median
    lines += [
        "",
        f"- (c)/(a): PUSH **{push / raw:.2f}x**, PULL **{pull / raw:.2f}x** (target >= 0.8x)",
        f"- (c)/(b): PUSH **{push / seed:.1f}x**, PULL **{pull / seed:.1f}x** (target >= 3x)",
        f"- (d)/(a): tus upload **{results['tus'].median / raw:.2f}x** with tuspy,"
        f" **{results['tus-sendfile'].median / raw:.2f}x** with a client that costs nothing",
        f"- (e)/(a): download whole **{results['get'].median / raw:.2f}x**, ranged "
        f"**{results['range'].median / raw:.2f}x** (target >= 0.8x)",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench transfer", description=__doc__)
    parser.add_argument("--size", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every path (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads (default 4)")
    parser.add_argument("--no-tmpfs", action="store_true", help="use the temp dir, not /dev/shm")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop the stored file from the page cache before each download (needs --no-tmpfs)",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the files go with --no-tmpfs (a disk)"
    )
    parser.add_argument(
        "--mysql-url",
        default=os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql"),
        help="MySQL/MariaDB server for the bench database",
    )
    args, _ = parser.parse_known_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        run(args)
        return 0

    return run_main("transfer", body)


if __name__ == "__main__":
    sys.exit(main())
