"""WebSocket echo: our RFC 6455 server against flask-sock and the `websockets` library.

**Question:** how many 1 KiB text messages per second does our server echo,
at what round-trip latency, next to the other ways of serving WebSockets from
Python? The issue's targets: at least **2x flask-sock** under the same
gunicorn, and at least **equal to websockets' own asyncio server**.

**How**, one server at a time:

1. ``--clients`` (100) sockets, all in this process on one asyncio loop, each
   connect to ``/ws/echo`` and then loop: send one message, wait for its echo
   (checked byte for byte), send the next. Each client's message is 1 KiB
   (``--size``) of ASCII text, so a round trip is one frame each way. The
   client is :class:`RawClient`, a minimal RFC 6455 client written for this
   benchmark (HTTP upgrade, masked frames with a fresh random key each,
   unmasked server frames parsed, pings answered): the `websockets` library's
   client costs about 28 µs of CPU per round trip, as much as the servers do,
   so with it every server measured the client (one core at 99 %). The
   clients offer no permessage-deflate and send no pings, so every server
   moves the same bytes.
2. An unmeasured ``--warmup`` (3 s), then ``--duration`` (10 s) measured:
   round trips that started and ended in the window count; msgs/s is their
   number over the window; p50/p99 are their round-trip times. A client gives
   up on an echo after ``--timeout`` seconds (an error).
3. The variants, each started, measured and stopped in turn, ``--rounds``
   (1) times over:

   * **ours, gthread** and **ours, gevent**: ``project.wsgi:app`` under
     ``gunicorn -c gunicorn.conf.py`` with the production settings,
     ``WEBSOCKET_ECHO=1``, SQLite in a temporary directory (the echo touches no
     table; ``/healthz`` needs the schema) and Redis under a fresh key prefix;
   * **flask-sock, gthread** and **flask-sock, gevent**: a minimal Flask app
     with a flask-sock echo (:mod:`bench.echo_peers`) under the **same**
     gunicorn settings;
   * **websockets**: ``websockets.asyncio.server.serve`` in one process
     (``python -m bench.echo_peers``).

   gunicorn settings, the same for ours and flask-sock: ``--workers`` (1 by
   default, like the one-process websockets peer; the clients need the other
   core), ``--threads`` (default: as many as clients, at least 100: under
   gthread each WebSocket holds a thread for its whole life) and
   ``--worker-connections`` (1000, for gevent).

Beside msgs/s and latency the table gives the **CPU time** of the server's
processes (master and workers) per message in the measured window, read from
``/proc``, and the client's and everything else's CPU use: all of it runs on
the same 2-core machine, so a client near 100 % of a core would cap every
server at the same rate (then µs/msg is the fairer comparison), and "others
CPU %" says which runs other work on the machine disturbed.

Everything is removed at the end, also on an error, Ctrl-C or SIGTERM: the
servers are stopped, the temporary directory deleted, and the Redis keys
under the run's prefix deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import os
import random
import secrets
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench._harness import (
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    descendants_cpu_seconds,
    free_port,
    gunicorn_env,
    gunicorn_server,
    log,
    machine_busy_seconds,
    run_main,
    tail,
)

try:  # the client masks with the websockets library's C code, not with the server's own
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from ext.frames import apply_mask

OURS = "project.wsgi:app"
FLASK_SOCK = "bench.echo_peers:build_flask_sock_app()"
ECHO_PATH = "/ws/echo"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CONNECT_TIMEOUT_S = 30.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- a minimal WebSocket client (also used by bench.fanout) ------------------------------------


def upgrade_request(
    host: str, port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[bytes, bytes]:
    """The HTTP upgrade request and the ``Sec-WebSocket-Accept`` it must be answered with."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # noqa: S324 - RFC 6455
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), accept


def upgrade_error(head: bytes, accept: bytes) -> str | None:
    """Why the server's answer (status line and headers) is not a valid 101, or None."""
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 101"):
        return f"handshake answered {lines[0].decode('latin-1', 'replace')!r}"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-accept" and value.strip() == accept:
            return None
    return "handshake: wrong or missing Sec-WebSocket-Accept"


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked with a fresh random key (RFC 6455 section 5.3)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    mask = random.randbytes(4)
    return header + mask + apply_mask(payload, mask)


class RawClient(asyncio.Protocol):
    """The client side of one WebSocket, as little Python per frame as the protocol allows.

    It writes the upgrade request, checks the 101, then splits what arrives
    into frames: data messages go to :meth:`on_message` with the time the
    bytes arrived (one ``time.monotonic()`` per read, the same clock in every
    process), pings are answered with pongs, a close frame is echoed. Server
    frames must not be masked; fragmented messages are reassembled.
    """

    def __init__(self, request: bytes, accept: bytes) -> None:
        self.request = request
        self.accept = accept
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.closed = False
        self.close_code: int | None = None
        self.error: str | None = None
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0

    # what subclasses override
    def on_open(self) -> None:
        """The 101 arrived and was valid."""

    def on_message(self, opcode: int, payload: bytes, now: float) -> None:
        """A complete text (1) or binary (2) message, and when its last bytes arrived."""

    def on_closed(self) -> None:
        """The connection is gone (``error`` says why, if it was not a clean close)."""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            if self.close_code is None and self.error is None:
                self.error = f"connection lost: {exc or 'EOF without a close frame'}"
            self.on_closed()

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(client_frame(opcode, payload))

    def fail(self, error: str) -> None:
        self.error = self.error or error
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > 65536:
                    self.fail("handshake: no end of headers in 64 KiB")
                self._buffer = data
                return
            error = upgrade_error(data[:end], self.accept)
            if error is not None:
                self.fail(error)
                return
            self.upgraded = True
            self.on_open()
            data = data[end + 4 :]
        pos, size = 0, len(data)
        while size - pos >= 2:
            first, second = data[pos], data[pos + 1]
            length, start = second & 0x7F, pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, start = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
            end = start + length
            if end > size:
                break
            if second & 0x80:
                self.fail("protocol: the server masked a frame")
                return
            pos = end
            opcode = first & 0x0F
            if opcode == 1 or opcode == 2:  # the fast path first
                if first & 0x80:
                    self.on_message(opcode, data[start:end], now)
                else:
                    self._fragment_opcode, self._fragments = opcode, [data[start:end]]
            elif opcode == 0:
                self._fragments.append(data[start:end])
                if first & 0x80:
                    self.on_message(self._fragment_opcode, b"".join(self._fragments), now)
                    self._fragments = []
            elif opcode == 9:
                self.send(10, data[start:end])
            elif opcode == 8:
                payload = data[start:end]
                self.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
                self.send(8, payload[:2])
                self.closed = True
                if self.transport is not None:
                    self.transport.close()
                self.on_closed()
                return
        self._buffer = data[pos:]


async def open_raw(
    factory: Callable[..., Any], host: str, port: int, timeout: float, *args: object
) -> Any:
    """Connect, then wait (at most ``timeout`` s in all) for ``on_open``'s future.

    ``factory(*args)`` builds the protocol; it must have an ``opened`` future
    that its ``on_open`` resolves and its ``on_closed`` fails.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    _, protocol = await asyncio.wait_for(
        loop.create_connection(lambda: factory(*args), host, port), timeout
    )
    try:
        await asyncio.wait_for(protocol.opened, max(0.0, deadline - loop.time()))
    except BaseException:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise
    return protocol


# -- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One server to measure: a gunicorn app under a worker class, or the websockets peer."""

    label: str
    key: str  # "ours", "flask-sock" or "websockets": what the ratios pair up
    app: str | None  # gunicorn app; None: the websockets peer
    worker_class: str | None = None
    ready_path: str = "/"


VARIANTS = (
    Variant("ours, gthread", "ours", OURS, "gthread", "/healthz"),
    Variant("ours, gevent", "ours", OURS, "gevent", "/healthz"),
    Variant("flask-sock, gthread", "flask-sock", FLASK_SOCK, "gthread"),
    Variant("flask-sock, gevent", "flask-sock", FLASK_SOCK, "gevent"),
    Variant("websockets (asyncio, 1 process)", "websockets", None),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench echo",
        description="Echo msgs/s and round-trip latency of our WebSocket server against "
        "flask-sock (same gunicorn) and the websockets library's asyncio server.",
    )
    parser.add_argument("--clients", type=int, default=100, help="concurrent sockets (100)")
    parser.add_argument("--size", type=int, default=1024, help="message size in bytes (1024)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (3)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for one echo (10)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gunicorn workers (1: like the one-process websockets peer; the clients need "
        "the other core)",
    )
    parser.add_argument(
        "--threads", type=int, help="gthread threads per worker (default: max(clients, 100))"
    )
    parser.add_argument(
        "--worker-connections", type=int, default=1000, help="gevent connections per worker"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="times every server is measured, in turn; the table gives medians (1)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=("ours", "flask-sock", "websockets"),
        help="run only these servers (repeatable): ours, flask-sock, websockets",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help=f"Redis for our app (default: $BENCH_REDIS_URL or {DEFAULT_REDIS_URL})",
    )
    args = parser.parse_args(argv)
    for name in ("clients", "size", "duration", "timeout", "workers", "rounds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be greater than zero")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.threads is None:
        args.threads = max(args.clients, 100)
    if args.threads < args.clients:
        parser.error("--threads must be at least --clients: a gthread socket holds a thread")
    if args.worker_connections * args.workers < args.clients:
        parser.error("--worker-connections x --workers must fit --clients")
    return args


# -- the load ---------------------------------------------------------------------------------


@dataclass
class EchoResult:
    """One variant's measured window."""

    messages: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, measured window only
    errors: list[str] = field(default_factory=list)
    mismatches: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0  # every process's: the server's, ours, and anyone else's

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    @property
    def server_us_per_msg(self) -> float | None:
        return self.server_cpu_s / self.messages * 1e6 if self.messages else None

    @property
    def client_cpu_percent(self) -> float:
        return 100 * self.client_cpu_s / self.seconds if self.seconds else 0.0

    @property
    def others_cpu_percent(self) -> float:
        """CPU used by neither the server nor the clients (database, other work), % of a core."""
        others = self.machine_cpu_s - self.server_cpu_s - self.client_cpu_s
        return max(0.0, 100 * others / self.seconds) if self.seconds else 0.0


def payload(index: int, size: int) -> bytes:
    """``size`` bytes of ASCII text, different for each client (so a crossed echo shows)."""
    head = f"client {index:05d} "
    body = "".join(secrets.choice(string.ascii_letters) for _ in range(max(0, size - len(head))))
    return (head + body)[:size].encode()


class EchoClient(RawClient):
    """Sends its message, waits for the echo, sends it again, until the window ends."""

    def __init__(self, request: bytes, accept: bytes, message: bytes, run: EchoRun) -> None:
        super().__init__(request, accept)
        self.message = message
        self.run = run
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent_at: float | None = None  # a round trip in flight since then

    def on_open(self) -> None:
        if not self.opened.done():
            self.opened.set_result(None)

    def send_next(self) -> None:
        self.sent_at = time.monotonic()
        self.send(1, self.message)

    def on_message(self, opcode: int, payload: bytes, now: float) -> None:
        run, sent_at = self.run, self.sent_at
        if sent_at is None:
            run.errors.append("an unexpected message")
            return
        if opcode != 1 or payload != self.message:
            run.mismatches += 1
        if sent_at >= run.start and now <= run.end:
            run.latencies.append(now - sent_at)
        if now < run.end:
            self.send_next()
        else:
            self.sent_at = None
            run.finished(self)

    def on_closed(self) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(self.error or f"closed ({self.close_code})"))
        if self.sent_at is not None or not self.run.started:
            self.run.errors.append(self.error or f"closed by the server ({self.close_code})")
            self.sent_at = None
            self.run.finished(self)


@dataclass
class EchoRun:
    """The shared state of one variant's clients."""

    start: float = float("inf")
    end: float = float("inf")
    started: bool = False
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    mismatches: int = 0
    pending: set[EchoClient] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def finished(self, client: EchoClient) -> None:
        self.pending.discard(client)
        if self.started and not self.pending:
            self.done.set()


async def _load(port: int, args: argparse.Namespace, cpu_root: int) -> EchoResult:
    run = EchoRun()
    clients: list[EchoClient] = []
    opening = []
    for index in range(args.clients):
        request, accept = upgrade_request("127.0.0.1", port, ECHO_PATH)
        opening.append(
            open_raw(
                EchoClient,
                "127.0.0.1",
                port,
                CONNECT_TIMEOUT_S,
                request,
                accept,
                payload(index, args.size),
                run,
            )
        )
    opened = await asyncio.gather(*opening, return_exceptions=True)
    failures = [f"connect: {type(x).__name__}: {x}" for x in opened if isinstance(x, BaseException)]
    clients = [c for c in opened if isinstance(c, EchoClient)]
    result = EchoResult(errors=failures)
    try:
        if failures:
            raise RuntimeError(f"{len(failures)} of {args.clients} clients failed: {failures[:3]}")
        now = time.monotonic()
        run.start, run.end = now + args.warmup, now + args.warmup + args.duration
        run.pending, run.started = set(clients), True
        for client in clients:
            client.send_next()
        await asyncio.sleep(max(0.0, run.start - time.monotonic()))
        cpu_before, client_before = descendants_cpu_seconds(cpu_root), time.process_time()
        machine_before = machine_busy_seconds()
        await asyncio.sleep(max(0.0, run.end - time.monotonic()))
        cpu_after, client_after = descendants_cpu_seconds(cpu_root), time.process_time()
        machine_after = machine_busy_seconds()
        # Round trips in flight at the deadline finish (or time out) before the sockets close.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.done.wait(), args.timeout)
        late = [c for c in run.pending if c.sent_at is not None]
        run.errors.extend(f"no echo in {args.timeout:g} s" for _ in late)
        result.seconds = args.duration
        result.server_cpu_s = cpu_after - cpu_before
        result.client_cpu_s = client_after - client_before
        result.machine_cpu_s = machine_after - machine_before
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.abort()
    result.latencies = run.latencies
    result.messages = len(run.latencies)
    result.errors += run.errors
    result.mismatches = run.mismatches
    return result


def measure(label: str, port: int, args: argparse.Namespace) -> EchoResult:
    log(f"{label}: {args.clients} clients, {args.warmup:g} s warm-up, {args.duration:g} s measured")
    result = asyncio.run(_load(port, args, os.getpid()))
    log(
        f"{label}: {result.rate:,.0f} msgs/s, p50 {fmt(result.percentile_ms(50))} ms, "
        f"p99 {fmt(result.percentile_ms(99))} ms, client CPU {result.client_cpu_percent:.0f} %, "
        f"{len(result.errors)} errors"
    )
    return result


# -- the servers -----------------------------------------------------------------------------


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the websockets peer exited with {proc.returncode}:\n{tail(log_path)}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the websockets peer did not listen in {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


@contextlib.contextmanager
def websockets_peer(port: int, log_path: Path) -> Iterator[None]:
    """``python -m bench.echo_peers --port PORT`` until the block ends (SIGTERM, then SIGKILL)."""
    command = [sys.executable, "-m", "bench.echo_peers", "--port", str(port)]
    root = Path(__file__).resolve().parent.parent
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command, cwd=root, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    log(f"started the websockets peer (pid {proc.pid}) on 127.0.0.1:{port}")
    try:
        wait_for_port(port, proc, log_path)
        yield
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log(f"stopped the websockets peer (pid {proc.pid})")


def server_env(args: argparse.Namespace, tmpdir: Path, prefix: str) -> dict[str, str]:
    """Production settings, the echo on, SQLite in ``tmpdir``, Redis under ``prefix``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GUNICORN_", "DATABASE_URL", "REDIS_", "WEBSOCKET_"))
    }
    base.update(
        APP_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        DATABASE_URL=f"sqlite:///{tmpdir / 'echo.db'}",
        REDIS_URL=args.redis_url,
        REDIS_KEY_PREFIX=prefix,
        WEBSOCKET_ECHO="1",
        GUNICORN_WORKER_CONNECTIONS=str(args.worker_connections),
    )
    return gunicorn_env(base, 0, args.workers, args.threads)


def migrate_sqlite(env: dict[str, str]) -> None:
    """Create the SQLite schema (``/healthz`` pings the database; nothing else uses it)."""
    from project import create_app
    from project.migrations import migrate

    # yoyo prints the result of a SELECT in one SQLite migration: keep stdout for the table.
    with contextlib.redirect_stdout(sys.stderr):
        migrate(create_app(environ=env))


@contextlib.contextmanager
def redis_prefix(url: str) -> Iterator[str]:
    """A fresh key prefix; every key containing it is deleted at the end."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=30)
    client.ping()  # fail before starting anything if Redis is not there
    prefix = f"bench_echo_{secrets.token_hex(4)}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        log(f"deleted {len(keys)} Redis keys containing {prefix}")
        client.close()


def run_variant(
    variant: Variant, args: argparse.Namespace, env: dict[str, str], tmpdir: Path
) -> EchoResult:
    port = free_port()
    log_path = tmpdir / f"{variant.key}-{variant.worker_class or 'asyncio'}.log"
    if variant.app is None:
        with websockets_peer(port, log_path):
            return measure(variant.label, port, args)
    server = {
        **env,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKER_CLASS": str(variant.worker_class),
    }
    with gunicorn_server(variant.app, server, port, log_path, variant.ready_path):
        result = measure(variant.label, port, args)
    problems = [
        line
        for line in log_path.read_text(errors="replace").splitlines()
        if "Traceback" in line or "ERROR" in line or "WORKER TIMEOUT" in line
    ]
    if problems:
        log(f"{variant.label}: {len(problems)} error lines in gunicorn's log:\n{tail(log_path)}")
        result.errors.extend(f"server log: {line}" for line in problems)
    return result


# -- the report ------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class Row:
    """One line of the table: a run, or the medians of a server's runs."""

    label: str
    key: str
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    messages: int
    errors: int
    us_per_msg: float | None
    client_percent: float
    others_percent: float

    @classmethod
    def of(cls, label: str, key: str, r: EchoResult) -> Row:
        return cls(
            label,
            key,
            r.rate,
            r.percentile_ms(50),
            r.percentile_ms(99),
            r.messages,
            len(r.errors) + r.mismatches,
            r.server_us_per_msg,
            r.client_cpu_percent,
            r.others_cpu_percent,
        )

    @classmethod
    def median(cls, label: str, key: str, runs: list[EchoResult]) -> Row:
        """Each column's median over the rounds (messages and errors: their sums)."""

        def med(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return statistics.median(known) if known else None

        rows = [cls.of(label, key, r) for r in runs]
        return cls(
            label,
            key,
            statistics.median(r.rate for r in rows),
            med([r.p50_ms for r in rows]),
            med([r.p99_ms for r in rows]),
            sum(r.messages for r in rows),
            sum(r.errors for r in rows),
            med([r.us_per_msg for r in rows]),
            statistics.median(r.client_percent for r in rows),
            statistics.median(r.others_percent for r in rows),
        )


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| server | msgs/s | p50 ms | p99 ms | messages | errors | server CPU µs/msg "
        "| client CPU % | others CPU % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.rate:,.0f} | {fmt(r.p50_ms)} | {fmt(r.p99_ms)} | {r.messages:,} "
            f"| {r.errors} | {fmt(r.us_per_msg, 0)} | {r.client_percent:.0f} "
            f"| {r.others_percent:.0f} |"
        )
    return lines


def ratio_row(label: str, ours: Row, other: Row, target: float) -> str:
    if not other.rate:
        return f"| {label} | n/a | n/a | {target:g}x | n/a (the reference echoed nothing) |"
    value = ours.rate / other.rate
    cpu = (
        f"{other.us_per_msg / ours.us_per_msg:.2f}x"
        if ours.us_per_msg and other.us_per_msg
        else "n/a"
    )
    verdict = "met" if value >= target else "**not met**"
    return f"| {label} | **{value:.2f}x** | {cpu} | {target:g}x | {verdict} |"


def report(args: argparse.Namespace, results: dict[Variant, list[EchoResult]]) -> list[str]:
    lines = [
        f"{args.clients} raw-socket clients on one asyncio loop in one process, "
        f"{args.size} B text messages, one in flight per client; {args.warmup:g} s warm-up, "
        f"{args.duration:g} s measured per server and round, {args.rounds} round(s). "
        f"gunicorn (ours and flask-sock): `-c gunicorn.conf.py`, {args.workers} worker(s); "
        f"gthread {args.threads} threads per worker; gevent {args.worker_connections} "
        f"worker_connections. websockets {websockets_version()}, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}.",
        "",
    ]
    if args.rounds > 1:
        lines += table(
            [
                Row.of(f"{v.label}, round {i + 1}", v.key, r)
                for i in range(args.rounds)
                for v, runs in results.items()
                for r in runs[i : i + 1]
            ]
        )
        lines += ["", f"Medians over the {args.rounds} rounds:", ""]
    rows = [Row.median(v.label, v.key, runs) for v, runs in results.items() if runs]
    lines += table(rows)
    lines += [
        "",
        "CPU columns, over the measured window: the server's processes (gunicorn master and "
        "workers, or the websockets peer) per echoed message; the client process and "
        "everything else on the machine in % of one core.",
        "",
        "| ratio | msgs/s | server CPU per msg (theirs/ours) | target | |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    by_label = {r.label: r for r in rows}
    ws = next((r for r in rows if r.key == "websockets"), None)
    for worker in ("gthread", "gevent"):
        ours = by_label.get(f"ours, {worker}")
        peer = by_label.get(f"flask-sock, {worker}")
        if ours is not None and peer is not None:
            lines.append(ratio_row(f"ours/flask-sock, {worker}", ours, peer, 2.0))
    for worker in ("gthread", "gevent"):
        ours = by_label.get(f"ours, {worker}")
        if ours is not None and ws is not None:
            lines.append(ratio_row(f"ours ({worker})/websockets", ours, ws, 1.0))
    saturated = [r.label for r in rows if r.client_percent >= 90]
    if saturated:
        lines += [
            "",
            "Note: the client process used 90 % or more of a core for "
            f"{', '.join(saturated)}: there the client may be the limit, and server CPU per "
            "message is the fairer comparison.",
        ]
    busy = [r.label for r in rows if r.others_percent >= 25]
    if busy:
        lines += [
            "",
            f"Note: other work used 25 % of a core or more during {', '.join(busy)}: "
            "msgs/s and latency there are lower than on a quiet machine.",
        ]
    for variant, runs in results.items():
        errors = sorted({e for r in runs for e in r.errors})
        mismatches = sum(r.mismatches for r in runs)
        if errors or mismatches:
            lines.append(
                f"\nWARNING {variant.label}: {len(errors)} distinct errors, "
                f"{mismatches} wrong echoes: {'; '.join(errors[:3])}"
            )
    return lines


def websockets_version() -> str:
    import websockets

    return str(websockets.__version__)


def run(args: argparse.Namespace) -> int:
    chosen = [v for v in VARIANTS if not args.only or v.key in args.only]
    if any(v.key == "flask-sock" for v in chosen):
        try:
            import flask_sock  # noqa: F401 - only checking that the peer can run
        except ImportError:
            log("flask-sock is not installed: `.venv/bin/pip install -e .[bench]`")
            return 2
    results: dict[Variant, list[EchoResult]] = {v: [] for v in chosen}
    with (
        tempfile.TemporaryDirectory(prefix="bench_echo_") as tmp,
        redis_prefix(args.redis_url) as prefix,
    ):
        tmpdir = Path(tmp)
        env = server_env(args, tmpdir, prefix)
        migrate_sqlite(env)
        # Round after round of every server: on a shared machine, each round sees
        # the others' load at about the same moments.
        for number in range(1, args.rounds + 1):
            for variant in chosen:
                log(f"round {number}/{args.rounds}")
                results[variant].append(run_variant(variant, args, env, tmpdir))
    print("\n".join(report(args, results)))
    failed = any(r.errors or r.mismatches for runs in results.values() for r in runs)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main("echo", lambda: run(args), (redis.RedisError, OSError))
