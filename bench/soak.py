"""Soak: 10,000 chatting sockets in 100 rooms for 10 minutes, with page traffic beside them.

**Question:** does the WebSocket stack hold a realistic load for a long
time without losing messages, slowing down, growing in memory or leaking
file descriptors? Goals (issue 10, item 5): every message delivered to every
socket in its room, p99 delivery latency reported, each worker's RSS growing
less than 10 % from minute 2 to the last minute, and each worker's open file
descriptors back to the baseline once the sockets have closed.

**How:**

1. A database ``bench_soak_<random>`` on the server of ``--mysql-url`` is
   migrated; ``--sockets`` / ``--sockets-per-user`` users (1,000 for 10
   sockets each), one more user for the page traffic and ``--rooms`` (100)
   rooms are created with the app's own functions. Redis keys get a fresh
   prefix ``bench_soak_<random>:``.
2. ``gunicorn -c gunicorn.conf.py project.wsgi:app`` runs with the production
   settings, ``GUNICORN_WORKER_CLASS=gevent``, ``--workers`` (2) and
   ``--worker-connections`` (10,000 per worker: gunicorn does not balance
   accepts, so one worker may get most sockets). Nothing else is changed
   (``--server-env`` adds settings when a run needs them): each user has 10
   sockets, under ``WEBSOCKET_MAX_PER_USER`` (20), and sends one message
   every 6 s, under ``CHAT_RATE_LIMIT`` (20 per 10 s); every user logs in once,
   and only failed logins count against the login throttles.
3. Every user logs in through the real form (``--login-threads`` at once).
   Socket ``s`` belongs to user ``s // 10`` and joins room ``s % rooms``, so a
   room has 100 sockets of 100 different users and each user is in 10 rooms.
4. The **baseline** is sampled: each gunicorn worker's RSS (``VmRSS`` of
   ``/proc/PID/status``) and open file descriptors (``/proc/PID/fd``, by kind:
   client sockets, Redis, MariaDB, the listener, pipes, ...); workers are the
   children of the gunicorn master.
5. ``--processes`` (4) client processes (:mod:`bench._soak_clients`: raw
   asyncio RFC 6455 clients, frames classified by their first bytes, never
   parsed as JSON) open their share of the sockets, at most ``--concurrency``
   (15) handshakes in flight each (60 in all, as in the fanout bench); a
   socket counts once its ``welcome`` arrived. Failed sockets are tried
   ``--connect-rounds`` (2) times in all.
6. The **hold**, ``--minutes`` (10): each socket sends one ``message`` a
   minute at its own offset, so the whole run sends ``sockets / 60`` messages
   a second spread evenly; each has a unique ``client_id`` carrying the
   moment it was sent. Every socket in the room (the sender's included)
   records when it arrives: the delivery latency, on ``time.monotonic()``
   (one clock for every process of the machine). A thread logs ``--page-rate``
   (4) GETs a second of ``/accounts/profile``, ``/realtime/`` and a room page
   as the page user, each on a new connection. Every ``--sample-interval``
   (30 s) a row of the timeline is sampled.
7. After the last send, until deliveries stop for 3 s (at most 60 s); then
   every socket is closed with a close handshake (1000) and the workers'
   descriptors are sampled every 2 s until the client sockets are gone (at
   most ``--settle``, 60 s).

Everything is removed at the end, also on an error, Ctrl-C or SIGTERM: the
client processes are stopped, gunicorn is stopped, the database dropped and
every Redis key containing the prefix deleted. Not run by a plain
``python -m bench`` (it takes ``--minutes`` plus a few): name it,
``python -m bench soak``; ``--sockets 500 --minutes 1`` is a smoke run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import http.client
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from bench._client_processes import ClientProcesses
from bench._harness import (
    REQUEST_TIMEOUT_S,
    SESSION_COOKIE,
    bench_database,
    cpu_seconds,
    free_port,
    gunicorn_env,
    gunicorn_server,
    log,
    machine_busy_seconds,
    run_main,
)
from bench._harness import log_in as harness_log_in
from bench._soak_clients import SocketSpec, client_process, hist_percentile
from bench.fanout import error_lines, gunicorn_pids, raise_fd_limit, rss_kib

OURS = "project.wsgi:app"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/mysql"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PAGE_USER = "soakpage"
REPLY_MARGIN_S = 60.0
DRAIN_LIMIT_S = 60.0
DRAIN_QUIET_S = 3.0
CLOSE_TIMEOUT_S = 15.0
LOG_PREFIX = re.compile(r"^(\[[^\]]*\] ?)+")
# Connection pools grow to their bound under a burst and never shrink: REDIS_MAX_CONNECTIONS
# (plus the broker's pub/sub connections) and DB_POOL_SIZE per worker.
POOLED = ("redis", "mysql")
PREFIX: list[str] = []  # this run's Redis key prefix, once chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench soak",
        description="Many chatting sockets in many rooms for minutes, with page traffic: "
        "deliveries, latency, and each worker's memory and open files over time.",
    )
    parser.add_argument("--sockets", type=int, default=10_000, help="room sockets (10000)")
    parser.add_argument("--rooms", type=int, default=100, help="chat rooms (100)")
    parser.add_argument(
        "--sockets-per-user", type=int, default=10, help="sockets of each user (10)"
    )
    parser.add_argument("--minutes", type=int, default=10, help="minutes held (10)")
    parser.add_argument("--processes", type=int, default=4, help="client processes (4)")
    parser.add_argument(
        "--concurrency", type=int, default=15, help="handshakes in flight per client process (15)"
    )
    parser.add_argument(
        "--open-timeout", type=float, default=60.0, help="seconds per handshake and welcome (60)"
    )
    parser.add_argument(
        "--ramp-timeout", type=float, default=600.0, help="seconds to open every socket (600)"
    )
    parser.add_argument(
        "--connect-rounds", type=int, default=2, help="tries per socket in the ramp (2)"
    )
    parser.add_argument(
        "--sample-interval", type=float, default=30.0, help="seconds between samples (30)"
    )
    parser.add_argument("--page-rate", type=float, default=4.0, help="page GETs a second (4)")
    parser.add_argument(
        "--settle", type=float, default=60.0, help="seconds for the fds to come back (60)"
    )
    parser.add_argument("--login-threads", type=int, default=4, help="logins at once (4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn gevent workers (2)")
    parser.add_argument(
        "--worker-connections", type=int, default=10_000, help="per gevent worker (10000)"
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the server (repeatable), e.g. WEBSOCKET_MAX_PER_USER=40",
    )
    parser.add_argument(
        "--mysql-url",
        default=os.environ.get("BENCH_MYSQL_URL", DEFAULT_MYSQL_URL),
        help=f"server for the bench database (default: $BENCH_MYSQL_URL or {DEFAULT_MYSQL_URL})",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help=f"Redis (default: $BENCH_REDIS_URL or {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--server-log", type=Path, help="copy gunicorn's log (errors, tracebacks) to this file"
    )
    args = parser.parse_args(argv)
    for name in (
        "sockets",
        "rooms",
        "sockets_per_user",
        "minutes",
        "processes",
        "concurrency",
        "open_timeout",
        "ramp_timeout",
        "connect_rounds",
        "sample_interval",
        "login_threads",
        "workers",
        "worker_connections",
    ):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be greater than zero")
    if args.page_rate < 0 or args.settle < 0:
        parser.error("--page-rate and --settle must not be negative")
    if args.rooms > args.sockets or args.processes > args.sockets:
        parser.error("--rooms and --processes must not exceed --sockets")
    for item in args.server_env:
        if "=" not in item:
            parser.error(f"--server-env {item!r}: expected NAME=VALUE")
    return args


# -- the layout: users, rooms, sockets ------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    sockets: int
    rooms: int
    per_user: int

    @property
    def users(self) -> int:
        return -(-self.sockets // self.per_user)

    def username(self, user: int) -> str:
        return f"soak{user:05d}"

    def room_name(self, room: int) -> str:
        return f"soak-{room:03d}"

    def room_of(self, socket: int) -> int:
        return socket % self.rooms

    def room_size(self, room: int) -> int:
        return len(range(room, self.sockets, self.rooms))

    def offset_s(self, socket: int) -> float:
        """Its moment in each minute: a user's sockets 60 / per_user seconds apart."""
        user, nth = divmod(socket, self.per_user)
        return (nth * self.users + user) / (self.per_user * self.users) * 60.0


# -- the server and what is sampled from it ------------------------------------------------


def server_env(
    args: argparse.Namespace, database_url: str, prefix: str, port: int
) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GUNICORN_", "DATABASE_URL", "REDIS_", "WEBSOCKET_", "CHAT_"))
    }
    base.update(
        APP_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        DATABASE_URL=database_url,
        REDIS_URL=args.redis_url,
        REDIS_KEY_PREFIX=prefix,
        GUNICORN_WORKER_CLASS="gevent",
        GUNICORN_WORKER_CONNECTIONS=str(args.worker_connections),
    )
    base.update(item.split("=", 1) for item in args.server_env)
    return gunicorn_env(base, port, args.workers, None)


def _socket_kinds(server_port: int, redis_port: int, mysql_port: int) -> dict[str, str]:
    """inode -> kind for every TCP and Unix socket of this network namespace."""
    kinds: dict[str, str] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/net/{name}") as table:
            next(table)
            for line in table:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if local_port == server_port:
                    kind = "listener" if fields[3] == "0A" else "clients"
                elif remote_port == redis_port:
                    kind = "redis"
                elif remote_port == mysql_port:
                    kind = "mysql"
                else:
                    kind = "tcp other"
                kinds[fields[9]] = kind
    with contextlib.suppress(OSError), open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) > 6:
                kinds[fields[6]] = "unix"
    return kinds


def fd_kinds(pid: int, sockets: dict[str, str]) -> Counter[str]:
    """A process's open descriptors by kind."""
    kinds: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                kinds[sockets.get(target[8:-1], "socket other")] += 1
            elif target.startswith("pipe:"):
                kinds["pipe"] += 1
            elif target.startswith("anon_inode:"):
                kinds[target[11:].strip("[]")] += 1
            else:
                kinds["file"] += 1
    return kinds


@dataclass
class ServerSample:
    """gunicorn at one moment: each worker's RSS (KiB), descriptors by kind, CPU seconds."""

    at: float
    workers: list[int]
    rss_kib: dict[int, int]
    fds: dict[int, Counter[str]]
    server_cpu_s: float
    machine_cpu_s: float

    @classmethod
    def now(cls, ports: tuple[int, int, int]) -> ServerSample:
        masters, workers = gunicorn_pids()
        sockets = _socket_kinds(*ports)
        return cls(
            at=time.monotonic(),
            workers=workers,
            rss_kib={pid: rss_kib(pid) for pid in workers},
            fds={pid: fd_kinds(pid, sockets) for pid in workers},
            server_cpu_s=cpu_seconds(masters + workers),
            machine_cpu_s=machine_busy_seconds(),
        )

    def total_fds(self, pid: int) -> int:
        return sum(self.fds.get(pid, Counter()).values())

    def unpooled_fds(self, pid: int) -> int:
        """Descriptors other than Redis and MariaDB connections (pools keep those open)."""
        fds = self.fds.get(pid, Counter())
        return sum(n for kind, n in fds.items() if kind not in POOLED)


# -- page traffic ---------------------------------------------------------------------------


class PageTraffic:
    """``rate`` logged-in GETs a second from two threads, each on a new connection."""

    def __init__(self, port: int, cookie: str, paths: list[str], rate: float) -> None:
        self.port = port
        self.cookie = cookie
        self.paths = paths
        self.rate = rate
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._window: tuple[Counter[str], list[float]] = (Counter(), [])
        self.statuses: Counter[str] = Counter()  # the whole run
        self.latencies: list[float] = []
        self.slow: list[tuple[float, str, float]] = []  # (time, path, ms) of the slowest
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self.rate <= 0:
            return
        self._threads = [
            threading.Thread(target=self._run, args=(i, 2), name=f"pages-{i}", daemon=True)
            for i in range(2)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int, threads: int) -> None:
        interval = threads / self.rate
        due = time.monotonic() + index * interval / threads
        n = index
        while not self._stop.is_set():
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            due = max(due + interval, time.monotonic())
            path = self.paths[n % len(self.paths)]
            n += threads
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
            try:
                conn.request("GET", path, headers={"Cookie": self.cookie})
                response = conn.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
            finally:
                conn.close()
            ms = (time.monotonic() - started) * 1000
            with self._lock:
                self._window[0][status] += 1
                self._window[1].append(ms)
                self.statuses[status] += 1
                self.latencies.append(ms)
                if status != "200" or ms > 1000:
                    self.slow.append((started, f"{path} {status}", ms))

    def take_window(self) -> tuple[Counter[str], list[float]]:
        with self._lock:
            window, self._window = self._window, (Counter(), [])
        return window

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S + 5)


# -- the client processes --------------------------------------------------------------------


class Clients(ClientProcesses):
    """The soak's client processes: one config each, and a reply with ``error`` raises."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        super().__init__(client_process, [(config,) for config in configs])

    def all(self, command: tuple[Any, ...], seconds: float) -> list[Any]:
        out = super().all(command, seconds)
        for reply in out:
            if isinstance(reply, dict) and "error" in reply:
                raise RuntimeError(f"a client process failed {command[0]!r}: {reply['error']}")
        return out


# -- setting up -----------------------------------------------------------------------------


@contextlib.contextmanager
def redis_prefix(url: str) -> Iterator[tuple[redis.Redis, str]]:
    """A Redis client and a fresh key prefix; every key containing it is deleted at the end."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=30)
    client.ping()
    prefix = f"bench_soak_{secrets.token_hex(4)}:"
    try:
        yield client, prefix
    finally:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        log(f"deleted {len(keys)} Redis keys containing {prefix}")
        client.close()


def prepare(env: dict[str, str], layout: Layout, password: str) -> None:
    """Migrate, then create the users (one password hash for all) and the rooms."""
    from apps.accounts.models import create_user
    from apps.accounts.passwords import hash_password
    from apps.realtime.models import create_room
    from project import create_app
    from project.migrations import migrate

    app = create_app(environ=env)
    with contextlib.redirect_stdout(sys.stderr):
        applied = migrate(app)
    log(f"migrated: {', '.join(applied) or 'nothing to do'}")
    with app.app_context():
        hashed = hash_password(password)
        owner = create_user(PAGE_USER, f"{PAGE_USER}@bench.invalid", hashed)
        for user in range(layout.users):
            name = layout.username(user)
            create_user(name, f"{name}@bench.invalid", hashed)
        for room in range(layout.rooms):
            create_room(layout.room_name(room), owner.id)
    log(f"created {layout.users + 1:,} users and {layout.rooms} rooms")


def log_in_all(port: int, names: list[str], password: str, threads: int) -> dict[str, str]:
    """username -> the ``Cookie`` header of a fresh login through the form."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        sids = list(pool.map(lambda name: harness_log_in(port, name, password), names))
    log(f"logged in {len(names):,} users in {time.monotonic() - started:.1f} s")
    return {name: f"{SESSION_COOKIE}={sid}" for name, sid in zip(names, sids, strict=True)}


# -- the run --------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the timeline."""

    label: str
    seconds: float  # since the hold began (negative: before)
    server: ServerSample
    open_sockets: int = 0
    sent: int = 0
    delivered: int = 0
    window: dict[int, int] = field(default_factory=dict)
    pages: Counter[str] = field(default_factory=Counter)
    page_ms: list[float] = field(default_factory=list)
    server_cpu_pct: float | None = None
    client_cpu_pct: float | None = None
    machine_cpu_pct: float | None = None
    redis_mib: float | None = None
    subscribed: int | None = None  # workers subscribed to the broker's channels in Redis


@dataclass
class Report:
    layout: Layout
    args: argparse.Namespace
    rows: list[Row] = field(default_factory=list)
    login_s: float = 0.0
    ramp_s: float = 0.0
    ramp_rounds: list[dict[str, Any]] = field(default_factory=list)
    connected: int = 0
    final: dict[str, Any] = field(default_factory=dict)
    close: dict[str, Any] = field(default_factory=dict)
    settle_s: float | None = None
    page_statuses: Counter[str] = field(default_factory=Counter)
    page_latencies: list[float] = field(default_factory=list)
    page_slow: list[tuple[float, str, float]] = field(default_factory=list)
    worker_changes: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    teardown_log_errors: list[str] = field(default_factory=list)
    client_rss_mib: float = 0.0
    redis_keys_before: int = 0
    redis_keys_after: int = 0
    errors: list[str] = field(default_factory=list)


def count_keys(rcli: redis.Redis, prefix: str) -> int:
    return sum(1 for _ in rcli.scan_iter(match=f"{prefix}*", count=1000))


def subscribers(rcli: redis.Redis, prefix: str) -> int | None:
    """Processes subscribed to the broker's presence channel: every live worker, normally."""
    try:
        return int(rcli.pubsub_numsub(f"{prefix}presence")[0][1])
    except (redis.RedisError, IndexError, ValueError):
        return None


def redis_mib(rcli: redis.Redis) -> float | None:
    try:
        return float(rcli.info("memory")["used_memory"]) / 2**20
    except (redis.RedisError, KeyError):
        return None


def socket_specs(layout: Layout, cookies: dict[str, str], processes: int) -> list[list[SocketSpec]]:
    shares: list[list[SocketSpec]] = [[] for _ in range(processes)]
    for s in range(layout.sockets):
        spec = SocketSpec(
            index=s,
            room=layout.room_name(layout.room_of(s)),
            cookie=cookies[layout.username(s // layout.per_user)],
            offset_s=layout.offset_s(s),
        )
        shares[s % processes].append(spec)
    return shares


def ramp(args: argparse.Namespace, clients: Clients, report: Report) -> None:
    started = time.monotonic()
    deadline = started + args.ramp_timeout
    for attempt in range(args.connect_rounds):
        round_started = time.monotonic()
        replies = clients.all(
            ("connect", deadline), args.ramp_timeout + 2 * args.open_timeout + REPLY_MARGIN_S
        )
        failures: Counter[str] = Counter()
        for reply in replies:
            failures.update(reply["failures"])
        joins = sorted(j for r in replies for j in r["joins"])
        report.connected = sum(r["open"] for r in replies)
        report.ramp_rounds.append(
            {
                "round": attempt + 1,
                "seconds": time.monotonic() - round_started,
                "opened": len(joins),
                "failures": dict(failures),
                "join_p50": joins[len(joins) // 2] if joins else None,
                "join_max": joins[-1] if joins else None,
            }
        )
        log(
            f"ramp round {attempt + 1}: {report.connected:,}/{args.sockets:,} open "
            f"(+{len(joins):,} in {time.monotonic() - round_started:.1f} s); "
            f"failures {dict(failures.most_common(3)) or 'none'}"
        )
        if report.connected >= args.sockets or time.monotonic() > deadline:
            break
    report.ramp_s = time.monotonic() - started


def take_row(
    label: str,
    seconds: float,
    ports: tuple[int, int, int],
    clients: Clients | None,
    pages: PageTraffic | None,
    rcli: redis.Redis,
    previous: Row | None,
    client_cpu_before: list[float],
) -> Row:
    server = ServerSample.now(ports)
    row = Row(label, seconds, server, redis_mib=redis_mib(rcli))
    row.subscribed = subscribers(rcli, PREFIX[0]) if PREFIX else None
    if clients is not None:
        samples = clients.all(("sample",), REPLY_MARGIN_S)
        row.open_sockets = sum(s["open"] for s in samples)
        row.sent = sum(s["sent"] for s in samples)
        row.delivered = sum(s["delivered"] for s in samples)
        for s in samples:
            for index, count in s["window"].items():
                row.window[index] = row.window.get(index, 0) + count
            if s.get("hold_error"):
                raise RuntimeError(f"a client process's sender failed: {s['hold_error']}")
        client_cpu: float | None = cpu_seconds(clients.pids())
    else:
        client_cpu = None  # the processes are gone
    if pages is not None:
        row.pages, row.page_ms = pages.take_window()
    if previous is not None:
        wall = server.at - previous.server.at
        cores = os.cpu_count() or 1
        if wall > 0:
            row.server_cpu_pct = 100 * (server.server_cpu_s - previous.server.server_cpu_s) / wall
            row.machine_cpu_pct = (
                100 * (server.machine_cpu_s - previous.server.machine_cpu_s) / wall / cores
            )
            if client_cpu_before and client_cpu is not None:
                row.client_cpu_pct = 100 * (client_cpu - client_cpu_before[0]) / wall
    client_cpu_before[:] = [] if client_cpu is None else [client_cpu]
    return row


def run(args: argparse.Namespace) -> Report:
    layout = Layout(args.sockets, args.rooms, args.sockets_per_user)
    raise_fd_limit(args.sockets + 1024)
    password = secrets.token_urlsafe(16)
    marker = f"sk{secrets.token_hex(2)}."
    report = Report(layout, args)
    redis_port = urlsplit(args.redis_url).port or 6379
    mysql_port = urlsplit(args.mysql_url).port or 3306
    with (
        tempfile.TemporaryDirectory(prefix="bench_soak_") as tmp,
        redis_prefix(args.redis_url) as (rcli, prefix),
        bench_database(args.mysql_url, "bench_soak_") as database,
    ):
        PREFIX[:] = [prefix]
        port = free_port()
        ports = (port, redis_port, mysql_port)
        env = server_env(args, database.app_url, prefix, port)
        prepare(env, layout, password)
        log_path = Path(tmp) / "gunicorn.log"
        run_log_size = 0
        with gunicorn_server(OURS, env, port, log_path, "/healthz"):
            started = time.monotonic()
            names = [PAGE_USER] + [layout.username(u) for u in range(layout.users)]
            cookies = log_in_all(port, names, password, args.login_threads)
            report.login_s = time.monotonic() - started
            paths = ["/accounts/profile", "/realtime/"] + [
                f"/realtime/rooms/{layout.room_name(r)}" for r in range(0, layout.rooms, 7)
            ]
            pages = PageTraffic(port, cookies[PAGE_USER], paths, args.page_rate)
            report.redis_keys_before = count_keys(rcli, prefix)
            cpu_mark: list[float] = []
            baseline = take_row("before", float("nan"), ports, None, None, rcli, None, cpu_mark)
            report.rows.append(baseline)
            log(
                "baseline: "
                + "; ".join(
                    f"worker {pid}: RSS {baseline.server.rss_kib[pid] / 1024:.0f} MiB, "
                    f"{baseline.server.total_fds(pid)} fds {dict(baseline.server.fds[pid])}"
                    for pid in baseline.server.workers
                )
            )
            shares = socket_specs(layout, cookies, args.processes)
            configs = [
                {
                    "host": "127.0.0.1",
                    "port": port,
                    "marker": marker,
                    "concurrency": args.concurrency,
                    "open_timeout": args.open_timeout,
                    "specs": share,
                }
                for share in shares
            ]
            clients = Clients(configs)
            try:
                ramp(args, clients, report)
                if report.connected == 0:
                    raise RuntimeError(f"no socket connected: {report.ramp_rounds}")
                pages.start()
                t0 = time.monotonic() + 1.0
                clients.all(("hold", t0, args.minutes), REPLY_MARGIN_S)
                hold(args, report, ports, clients, pages, rcli, t0, cpu_mark)
                drain(report, ports, clients, pages, rcli, t0, cpu_mark)
                report.final = merge_final(clients.all(("final",), REPLY_MARGIN_S * 3))
                report.client_rss_mib = report.final["rss_kib"] / 1024
                pages.stop()
                report.page_statuses = pages.statuses
                report.page_latencies = pages.latencies
                report.page_slow = pages.slow
                log("closing every socket")
                closes = clients.all(("close", CLOSE_TIMEOUT_S), CLOSE_TIMEOUT_S + REPLY_MARGIN_S)
                report.close = {
                    "sockets": sum(c["sockets"] for c in closes),
                    "clean": sum(c["clean"] for c in closes),
                    "aborted": sum(c["aborted"] for c in closes),
                    "codes": dict(sum((Counter(c["codes"]) for c in closes), Counter())),
                    "seconds": max(c["seconds"] for c in closes),
                }
                settle(args, report, ports, rcli, t0, cpu_mark, baseline)
            finally:
                pages.stop()
                run_log_size = log_path.stat().st_size
                clients.stop()
            with contextlib.suppress(redis.RedisError):
                report.redis_keys_after = count_keys(rcli, prefix)
        if args.server_log:
            shutil.copyfile(log_path, args.server_log)
            log(f"gunicorn's log copied to {args.server_log}")
        text = log_path.read_bytes()
        report.log_errors = error_lines(text[:run_log_size])
        report.teardown_log_errors = error_lines(text[run_log_size:])
    return report


def hold(
    args: argparse.Namespace,
    report: Report,
    ports: tuple[int, int, int],
    clients: Clients,
    pages: PageTraffic,
    rcli: redis.Redis,
    t0: float,
    cpu_mark: list[float],
) -> None:
    end = t0 + args.minutes * 60
    k = 0
    previous = report.rows[-1]
    while True:
        at = t0 + k * args.sample_interval
        if at > end + 1e-6:
            break
        time.sleep(max(0.0, at - time.monotonic()))
        row = take_row(
            f"{k * args.sample_interval / 60:g} min",
            time.monotonic() - t0,
            ports,
            clients,
            pages,
            rcli,
            previous if k else None,
            cpu_mark,
        )
        report.rows.append(row)
        check_workers(report, previous, row)
        previous = row
        log(progress(row))
        k += 1


def drain(
    report: Report,
    ports: tuple[int, int, int],
    clients: Clients,
    pages: PageTraffic,
    rcli: redis.Redis,
    t0: float,
    cpu_mark: list[float],
) -> None:
    """Wait until deliveries stop for DRAIN_QUIET_S (at most DRAIN_LIMIT_S); one row for it."""
    started = time.monotonic()
    last, quiet_since = -1, time.monotonic()
    window: Counter[int] = Counter()  # what the polls took from the processes' windows
    while time.monotonic() - started < DRAIN_LIMIT_S:
        samples = clients.all(("sample",), REPLY_MARGIN_S)
        for s in samples:
            window.update(s["window"])
        delivered = sum(s["delivered"] + s["recovered"] for s in samples)
        if delivered != last:
            last, quiet_since = delivered, time.monotonic()
        elif time.monotonic() - quiet_since >= DRAIN_QUIET_S:
            break
        time.sleep(0.5)
    row = take_row(
        "drained", time.monotonic() - t0, ports, clients, pages, rcli, report.rows[-1], cpu_mark
    )
    window.update(row.window)
    row.window = dict(window)
    report.rows.append(row)
    log(f"drained in {time.monotonic() - started:.1f} s: {progress(row)}")


def settle(
    args: argparse.Namespace,
    report: Report,
    ports: tuple[int, int, int],
    rcli: redis.Redis,
    t0: float,
    cpu_mark: list[float],
    baseline: Row,
) -> None:
    """Sample every 2 s after the close until no worker has a client socket and every
    worker's descriptors but its pooled connections are at most the baseline (or --settle
    s passed); one row."""
    started = time.monotonic()
    while True:
        server = ServerSample.now(ports)
        clients_left = sum(server.fds[pid].get("clients", 0) for pid in server.workers)
        back = all(
            server.unpooled_fds(pid) <= baseline.server.unpooled_fds(pid) for pid in server.workers
        )
        if (clients_left == 0 and back) or time.monotonic() - started >= args.settle:
            break
        time.sleep(2.0)
    report.settle_s = time.monotonic() - started if clients_left == 0 else None
    row = take_row(
        "closed", time.monotonic() - t0, ports, None, None, rcli, report.rows[-1], cpu_mark
    )
    report.rows.append(row)
    check_workers(report, baseline, row)
    log(f"after the close ({time.monotonic() - started:.1f} s): {progress(row)}")


def check_workers(report: Report, before: Row, after: Row) -> None:
    if before.server.workers != after.server.workers:
        report.worker_changes.append(
            f"{after.label}: workers {before.server.workers} became {after.server.workers}"
        )


def progress(row: Row) -> str:
    workers = ", ".join(
        f"{row.server.rss_kib[pid] / 1024:.0f} MiB/{row.server.total_fds(pid)} fds"
        for pid in row.server.workers
    )
    return (
        f"{row.label}: {row.open_sockets:,} open, {row.sent:,} sent, {row.delivered:,} "
        f"delivered, window p99 {fmt(hist_percentile(row.window, 99))} ms; workers {workers}; "
        f"{row.subscribed} subscribed; "
        f"pages {dict(row.pages)}"
    )


def merge_final(finals: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "counts": Counter(),
        "sent_ids": [],
        "not_sent_ids": [],
        "refused_ids": {},
        "total": Counter(),
        "errors": Counter(),
        "drops": Counter(),
        "reconnect_failures": Counter(),
        "connect_failures": Counter(),
    }
    sums = ("delivered", "recovered", "duplicates", "presence", "other_frames", "reconnects")
    for key in (*sums, "rss_kib"):
        merged[key] = 0
    merged["send_lag_max"] = 0.0
    for f in finals:
        merged["counts"].update(f["counts"])
        merged["sent_ids"].extend(f["sent_ids"])
        merged["not_sent_ids"].extend(f["not_sent_ids"])
        merged["refused_ids"].update(f["refused_ids"])
        merged["total"].update(f["total"])
        for key in ("errors", "drops", "reconnect_failures", "connect_failures"):
            merged[key].update(f[key])
        for key in (*sums, "rss_kib"):
            merged[key] += f[key]
        merged["send_lag_max"] = max(merged["send_lag_max"], f["send_lag_max"])
    return merged


# -- the report ------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    if value == float("inf"):
        return "> 60,000"  # the histogram's last bin
    return "n/a" if value is None else f"{value:,.{digits}f}"


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-p * len(ordered) // 100)) - 1))]


@dataclass
class Deliveries:
    sent: int
    refused: int
    not_sent: int
    expected: int
    delivered: int  # of expected deliveries, live or recovered, at most the room's size each
    complete: int  # messages that reached every socket of their room
    lost: int  # accepted (no error frame) and seen by no socket at all
    extra: int  # deliveries beyond a room's size (duplicates)
    strays: int  # client_ids seen but never sent


def deliveries(report: Report) -> Deliveries:
    final, layout = report.final, report.layout
    counts: Counter[str] = final["counts"]
    refused = final["refused_ids"]
    expected = delivered = complete = lost = extra = 0
    sent_set = set(final["sent_ids"])
    for client_id in final["sent_ids"]:
        if client_id in refused:
            continue
        size = layout.room_size(layout.room_of(int(client_id.split(".")[0])))
        got = counts.get(client_id, 0)
        expected += size
        delivered += min(got, size)
        extra += max(0, got - size)
        complete += got >= size
        lost += got == 0
    strays = sum(1 for client_id in counts if client_id not in sent_set)
    return Deliveries(
        len(final["sent_ids"]),
        len(refused),
        len(final["not_sent_ids"]),
        expected,
        delivered,
        complete,
        lost,
        extra,
        strays,
    )


def hold_rows(report: Report) -> list[Row]:
    return [r for r in report.rows if r.label.endswith(" min")]


def growth_rows(report: Report) -> tuple[Row, Row] | None:
    """(minute 2, the last minute), or (half-way, last) for a run under 4 minutes."""
    rows = hold_rows(report)
    if len(rows) < 2:
        return None
    last = rows[-1]
    reference_s = 120.0 if report.args.minutes >= 4 else last.seconds / 2
    reference = min(rows, key=lambda r: abs(r.seconds - reference_s))
    return reference, last


def render(report: Report) -> list[str]:
    args, layout, final = report.args, report.layout, report.final
    d = deliveries(report)
    total: dict[int, int] = dict(final["total"])
    p50, p99 = hist_percentile(total, 50), hist_percentile(total, 99)
    p999, worst = hist_percentile(total, 99.9), hist_percentile(total, 100)
    baseline = report.rows[0]
    closed = report.rows[-1] if report.rows[-1].label == "closed" else None
    growth = growth_rows(report)
    changed = ", ".join(args.server_env) or "none"
    cores = os.cpu_count() or 1
    lines = [
        f"{report.connected:,} of {layout.sockets:,} sockets in {layout.rooms} rooms "
        f"({layout.users:,} users x {layout.per_user} sockets, {layout.sockets // layout.rooms} "
        f"sockets of different users a room), held {args.minutes} min, each sending one "
        f"message a minute ({layout.sockets / 60:,.0f} messages/s in all, "
        f"{layout.sockets / 60 * layout.sockets / layout.rooms:,.0f} deliveries/s); gunicorn "
        f"`-c gunicorn.conf.py`, {args.workers} gevent workers x {args.worker_connections:,} "
        f"worker_connections, production settings, changed: {changed}; {args.processes} client "
        f"processes of raw asyncio clients; {args.page_rate:g} page GETs/s; {cores} CPUs, "
        f"all on one machine. Logins took {report.login_s:.0f} s, the ramp "
        f"{report.ramp_s:.0f} s.",
        "",
    ]
    ok = d.delivered == d.expected and d.expected > 0 and not d.refused and not d.not_sent
    page_total = sum(report.page_statuses.values())
    page_ok = report.page_statuses.get("200", 0)
    rows = [
        ("sockets open / asked", f"{report.connected:,} / {layout.sockets:,}", "all"),
        (
            "messages sent (refused, not sent: socket down)",
            f"{d.sent:,} ({d.refused:,}, {d.not_sent:,})",
            "",
        ),
        (
            "deliveries / expected (message x sockets in its room)",
            f"{d.delivered:,} / {d.expected:,} "
            f"({100 * d.delivered / d.expected if d.expected else 0:.3f} %)",
            "all: " + ("**met**" if ok else "**NOT met**"),
        ),
        (
            "messages that reached every socket of their room",
            f"{d.complete:,} of {d.sent - d.refused:,}; {d.lost:,} reached none",
            "",
        ),
        (
            "delivery latency p50 / p99 / p99.9 / max, ms",
            f"{fmt(p50)} / {fmt(p99)} / {fmt(p999)} / {fmt(worst)}",
            "p99 reported",
        ),
    ]
    if growth is not None:
        ref, last = growth
        growths = []
        for pid in last.server.workers:
            a, b = ref.server.rss_kib.get(pid), last.server.rss_kib.get(pid)
            if a and b:
                growths.append((pid, a, b, 100 * (b - a) / a))
        text = "; ".join(
            f"{a / 1024:,.0f} -> {b / 1024:,.0f} MiB (**{g:+.1f} %**)" for _, a, b, g in growths
        )
        met = growths and all(g < 10 for *_, g in growths)
        rows.append(
            (
                f"RSS per worker, {ref.label} -> {last.label}",
                text or "n/a (a worker was replaced)",
                "< 10 %: " + ("**met**" if met else "**NOT met**"),
            )
        )
    if closed is not None:
        fd_text, fd_met, unpooled_text, unpooled_met = [], True, [], True
        for pid in baseline.server.workers:
            before, after = baseline.server.total_fds(pid), closed.server.total_fds(pid)
            peak = max(
                (r.server.total_fds(pid) for r in report.rows if pid in r.server.fds), default=0
            )
            fd_text.append(f"{before} -> peak {peak:,} -> {after}")
            fd_met = fd_met and after <= before
            u_before, u_after = baseline.server.unpooled_fds(pid), closed.server.unpooled_fds(pid)
            unpooled_text.append(f"{u_before} -> {u_after}")
            unpooled_met = unpooled_met and u_after <= u_before
        settle_text = (
            f"client sockets gone {fmt(report.settle_s)} s after the close"
            if report.settle_s is not None
            else f"client sockets still open after {args.settle:g} s"
        )
        rows.append(
            (
                "fds per worker: baseline -> peak -> after the close",
                "; ".join(fd_text) + f" ({settle_text})",
                "back to baseline: " + ("**met**" if fd_met else "**NOT met**"),
            )
        )
        pools = "; ".join(
            " + ".join(f"{closed.server.fds.get(pid, Counter()).get(k, 0)} {k}" for k in POOLED)
            for pid in baseline.server.workers
        )
        rows.append(
            (
                "fds per worker but Redis/MariaDB connections: baseline -> after the close "
                "(pooled connections left open)",
                "; ".join(unpooled_text) + f" ({pools})",
                "back to baseline: " + ("**met**" if unpooled_met else "**NOT met**"),
            )
        )
    page_p50, page_p99 = pct(report.page_latencies, 50), pct(report.page_latencies, 99)
    rows.append(
        (
            "page GETs: statuses (p50 / p99 ms)",
            ", ".join(f"{n:,} x {s}" for s, n in report.page_statuses.most_common())
            + f" ({fmt(page_p50)} / {fmt(page_p99)})",
            f"all 200: {'**met**' if page_total and page_ok == page_total else '**NOT met**'}",
        )
    )
    drops = sum(final["drops"].values())
    rows.append(
        (
            "sockets dropped by the server during the hold (reconnected)",
            f"{drops:,} ({final['reconnects']:,})" + (f": {dict(final['drops'])}" if drops else ""),
            "0",
        )
    )
    lines += ["| measure | value | goal |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += [
        "",
        "Timeline (RSS MiB / open fds per worker; latency of the deliveries in each window):",
        "",
        "| at | open sockets | sent | delivered | p50 ms | p99 ms | "
        + " | ".join(f"worker {i + 1}" for i in range(len(baseline.server.workers)))
        + " | server CPU % | clients CPU % | machine % | Redis MiB | subscribed | pages |",
        "| --- | ---: | ---: | ---: | ---: | ---: | "
        + " | ".join("---:" for _ in baseline.server.workers)
        + " | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    order = baseline.server.workers
    for row in report.rows:
        per_worker = " | ".join(
            f"{row.server.rss_kib[pid] / 1024:,.0f} / {row.server.total_fds(pid):,}"
            if pid in row.server.rss_kib
            else "gone"
            for pid in order
        )
        pages = ", ".join(f"{n} x {s}" for s, n in row.pages.most_common()) or "-"
        lines.append(
            f"| {row.label} | {row.open_sockets:,} | {row.sent:,} | {row.delivered:,} "
            f"| {fmt(hist_percentile(row.window, 50))} | {fmt(hist_percentile(row.window, 99))} "
            f"| {per_worker} | {fmt(row.server_cpu_pct, 0)} | {fmt(row.client_cpu_pct, 0)} "
            f"| {fmt(row.machine_cpu_pct, 0)} | {fmt(row.redis_mib)} "
            f"| {'n/a' if row.subscribed is None else row.subscribed} | {pages} |"
        )
    if closed is not None:
        kinds = sorted(
            {k for r in (baseline, closed) for c in r.server.fds.values() for k in c}
            | {k for r in report.rows for c in r.server.fds.values() for k in c}
        )
        peak_row = max(report.rows, key=lambda r: sum(r.server.total_fds(p) for p in order))
        lines += [
            "",
            f"Descriptors by kind per worker: before the sockets, at the peak ({peak_row.label}), "
            "after the close:",
            "",
            "| kind | " + " | ".join(f"worker {i + 1}" for i in range(len(order))) + " |",
            "| --- | " + " | ".join("---" for _ in order) + " |",
        ]
        for kind in kinds:
            cells = []
            for pid in order:
                values = [
                    r.server.fds.get(pid, Counter()).get(kind, 0)
                    for r in (baseline, peak_row, closed)
                ]
                cells.append(" / ".join(f"{v:,}" for v in values))
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    notes = []
    for r in report.ramp_rounds:
        if r["failures"]:
            notes.append(
                f"ramp round {r['round']}: {r['opened']:,} opened in {r['seconds']:.0f} s; "
                f"failures {dict(Counter(r['failures']).most_common(4))}"
            )
    notes.append(
        f"Close: {report.close.get('clean', 0):,} of {report.close.get('sockets', 0):,} sockets "
        f"closed cleanly (1000) in {fmt(report.close.get('seconds'))} s, "
        f"{report.close.get('aborted', 0)} aborted"
        + (f", codes {report.close.get('codes')}" if report.close.get("codes") else "")
        + "."
    )
    notes.append(
        f"Frames: {final['presence']:,} presence, {final['recovered']:,} messages recovered by "
        f"reconnects' welcomes, {final['duplicates']:,} duplicates dropped, {d.extra:,} "
        f"deliveries beyond a room's size, {d.strays} unknown client_ids, "
        f"{final['other_frames']:,} other; error frames {dict(final['errors']) or 'none'}. "
        f"Worst sender lag {final['send_lag_max'] * 1000:.0f} ms; client processes' RSS "
        f"{report.client_rss_mib:,.0f} MiB."
    )
    notes.append(
        f"Redis keys with the run's prefix: {report.redis_keys_before:,} before the sockets, "
        f"{report.redis_keys_after:,} after the close."
    )
    if final["reconnect_failures"]:
        notes.append(f"reconnect failures: {dict(final['reconnect_failures'])}")
    notes += report.worker_changes
    if report.page_slow:
        worst_pages = sorted(report.page_slow, key=lambda s: -s[2])[:5]
        notes.append(
            "slowest or failed pages: "
            + ", ".join(f"{what} {ms:,.0f} ms" for _, what, ms in worst_pages)
        )
    notes += report.errors
    for when, errors in (
        ("during the run", report.log_errors),
        ("after the clients left (teardown)", report.teardown_log_errors),
    ):
        if errors:
            log_kinds = Counter(
                LOG_PREFIX.sub("", line) for line in errors if not line.startswith("Traceback")
            )
            tracebacks = sum(1 for line in errors if line.startswith("Traceback"))
            notes.append(
                f"gunicorn's log {when}: {len(errors)} error lines ({tracebacks} tracebacks); "
                + "; ".join(f"{n} x `{line[:120]}`" for line, n in log_kinds.most_common(4))
            )
        else:
            notes.append(f"gunicorn's log {when}: no error lines, no tracebacks.")
    lines += ["", *(f"- {n}" for n in notes)]
    return lines


def run_and_print(args: argparse.Namespace) -> int:
    report = run(args)
    print("\n".join(render(report)))
    d = deliveries(report)
    return 0 if report.connected == args.sockets and d.delivered == d.expected else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main("soak", lambda: run_and_print(args), (redis.RedisError, OSError))


if __name__ == "__main__":
    sys.exit(main())
