"""Room fan-out: how long one chat message takes to reach every socket in a big room.

**Question:** with ``--clients`` (10,000) sockets in one chat room on our
server (gunicorn ``gevent`` workers, rooms broadcast through Redis), how long
after one client sends a message does the **last** client have it? The
issue's target: p99 under **250 ms** over ``--broadcasts`` (20) messages.

**How:**

1. A database ``bench_fanout_<random>`` on the server of ``--mysql-url`` is
   migrated; one user and one room are created in it with the app's own
   functions. Redis keys get a fresh prefix ``bench_fanout_<random>:``.
2. ``gunicorn -c gunicorn.conf.py project.wsgi:app`` runs with the production
   settings, ``GUNICORN_WORKER_CLASS=gevent``, ``--workers`` (2) and
   ``--worker-connections`` (10,000 per worker, so one worker could hold every
   socket: gunicorn does not balance accepts), ``CHAT_RATE_LIMIT`` raised to
   ``100000 per second`` and the access log off. The user logs in through the
   real form; every socket sends that session cookie (all sockets are the
   same user, so the ``presence`` list stays one name long: what is measured is
   the number of sockets, not the size of the list).
3. ``--processes`` (2) client processes (:mod:`multiprocessing`, so the
   clients get more than one core) each run one asyncio loop of
   :class:`RoomClient`, the minimal RFC 6455 client of :mod:`bench.echo`
   (frames split by their headers, classified by their first bytes, never
   parsed as JSON; pings answered): a socket costs a read callback per frame
   and little else, where the `websockets` client costs several times more
   CPU, which the 2-core machine takes from the server. Sockets are added
   ``--step`` (1,000) at a time, spread over the processes, at most
   ``--concurrency`` (30) handshakes in flight per process (60 in all; the
   app's Redis pool has ``REDIS_MAX_CONNECTIONS``, 100, per worker, and
   callers beyond that wait for a connection). A socket counts as connected once its
   ``welcome`` frame arrived, within ``--open-timeout`` (60 s). After each
   step the table records how long it took, the join time (TCP connect to
   welcome) of its sockets, the slowest round trip of ``--probes`` (4) echo
   sockets on ``/ws/echo`` that time the workers' responsiveness every 0.25 s
   (``WEBSOCKET_ECHO=1`` for them), CPU time of the server, the clients, Redis
   and the whole machine, gunicorn's memory and each worker's open files, and
   the ``presence`` frames the clients received. A step with a failed
   connection stops the ramp: that is where this machine breaks, and the
   broadcasts then run with the sockets that are connected. So does
   ``--ramp-timeout`` (360 s). (Until the broker sent presence as deltas at
   most once per ``PRESENCE_INTERVAL``, every join sent the whole list to
   every socket: N joins cost N^2/2 frames and 10,000 sockets did not fit in
   the ramp; the ramp table's presence column shows what joins cost now.)
4. Before the broadcasts the room must be quiet: the clients stop receiving
   frames for ``--quiet`` (1 s) (``presence`` frames still in flight after
   the joins would be measured otherwise).
5. ``--broadcasts`` times, ``--interval`` (0.5 s) apart: one socket (the first
   of the first process) sends a ``message`` frame with a numbered body;
   every socket, the sender's included, records when the broadcast arrives
   (``time.monotonic()``, which on Linux is one clock for every process of
   the machine). The delay of a broadcast is the last arrival minus the
   moment just before the send; a socket that has not got it after
   ``--timeout`` (30 s) is counted as missing. The report gives p50/p99 of
   the last arrival over the broadcasts, and the median arrival for
   comparison.

Everything is removed at the end, also on an error, Ctrl-C or SIGTERM: the
client processes are stopped (their sockets closed by the kernel), gunicorn is
stopped, the database dropped and every Redis key containing the prefix
deleted. Every wait is bounded: ``--ramp-timeout`` for the whole ramp (no
handshake starts after it), ``--open-timeout`` per socket, 120 s for the room
to go quiet, ``--timeout`` per broadcast. The soft ``RLIMIT_NOFILE`` is raised
to the hard limit first (gunicorn and the client processes inherit it): one
gunicorn worker may get every socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench._client_processes import ClientProcesses
from bench._harness import (
    SESSION_COOKIE,
    UsageError,
    bench_database,
    cpu_seconds,
    free_port,
    gunicorn_env,
    gunicorn_server,
    log,
    machine_busy_seconds,
    proc_stat,
    run_main,
)
from bench._harness import log_in as harness_log_in
from bench.echo import RawClient, open_raw, upgrade_request

OURS = "project.wsgi:app"
SETTLE_LIMIT_S = 120.0  # the room must go quiet within this after the ramp
ROOM = "fanout"
USERNAME = "fanout"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/mysql"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CHAT_RATE_LIMIT = "100000 per second"  # one user sends every broadcast; the default is 20/10 s
SKIPPED = "skipped"  # a handshake not started: the ramp's deadline had passed
REPLY_MARGIN_S = 30.0  # how much longer than its own bound a client process may take to answer
LOG_PREFIX = re.compile(r"^(\[[^\]]*\] ?)+")  # gunicorn's "[time] [pid] [level] " and Flask's


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench fanout",
        description="Time until the last of N sockets in one chat room has a broadcast "
        "(gunicorn gevent workers, Redis).",
    )
    parser.add_argument("--clients", type=int, default=10_000, help="sockets in the room (10000)")
    parser.add_argument(
        "--processes", type=int, default=2, help="client processes sharing the sockets (2)"
    )
    parser.add_argument("--step", type=int, default=1000, help="sockets added per ramp step (1000)")
    parser.add_argument(
        "--concurrency", type=int, default=30, help="handshakes in flight per client process (30)"
    )
    parser.add_argument("--broadcasts", type=int, default=20, help="messages timed (20)")
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between broadcasts (0.5)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds a broadcast may take (30)"
    )
    parser.add_argument(
        "--quiet", type=float, default=1.0, help="seconds without frames before broadcasting (1)"
    )
    parser.add_argument(
        "--open-timeout",
        type=float,
        default=60.0,
        help="seconds one socket may take from connecting to its welcome; a slower one "
        "fails and stops the ramp (60)",
    )
    parser.add_argument(
        "--ramp-timeout",
        type=float,
        default=360.0,
        help="seconds the whole ramp may take: no handshake starts after it, and the "
        "broadcasts go to the sockets connected by then (360)",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn gevent workers (2)")
    parser.add_argument(
        "--worker-connections", type=int, default=10_000, help="per gevent worker (10000)"
    )
    parser.add_argument(
        "--mysql-url",
        default=os.environ.get("BENCH_MYSQL_URL", DEFAULT_MYSQL_URL),
        help="server to create the bench database on; its database name is replaced "
        f"(default: $BENCH_MYSQL_URL or {DEFAULT_MYSQL_URL})",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help=f"Redis for sessions and rooms (default: $BENCH_REDIS_URL or {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--probes",
        type=int,
        default=4,
        help="echo sockets timing the workers' responsiveness every 0.25 s (4; 0: none)",
    )
    parser.add_argument(
        "--body-size",
        type=int,
        default=0,
        help="pad each broadcast's body to this many characters (default: ~20; at most 2000)",
    )
    parser.add_argument(
        "--server-log", type=Path, help="copy gunicorn's log (errors, tracebacks) to this file"
    )
    args = parser.parse_args(argv)
    for name in (
        "clients",
        "processes",
        "step",
        "concurrency",
        "broadcasts",
        "timeout",
        "open_timeout",
        "ramp_timeout",
        "workers",
        "worker_connections",
    ):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be greater than zero")
    if args.probes < 0:
        parser.error("--probes must not be negative")
    if not 0 <= args.body_size <= 2000:
        parser.error("--body-size must be 0-2000 (CHAT_MESSAGE_MAX_LENGTH)")
    if args.interval < 0 or args.quiet < 0:
        parser.error("--interval and --quiet must not be negative")
    if args.processes > args.clients:
        parser.error("--processes must not exceed --clients")
    return args


# -- the client processes ---------------------------------------------------------------------
#
# Each runs one asyncio loop with its share of the sockets (RoomClient, the
# minimal client of bench.echo) and answers the coordinator's commands over a
# multiprocessing Pipe: ("connect", n, deadline), ("status",), ("send", k),
# ("collect", k, seconds), ("quit",). Frames are classified by their first
# bytes, not parsed as JSON: with thousands of sockets the clients' CPU is the
# scarce resource on a small machine, and it would be measured as fan-out
# latency.


class RoomClient(RawClient):
    """One member of the room: counts presence frames, timestamps the broadcasts."""

    def __init__(self, request: bytes, accept: bytes, fleet: Fleet) -> None:
        super().__init__(request, accept)
        self.fleet = fleet
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_message(self, opcode: int, payload: bytes, now: float) -> None:
        fleet = self.fleet
        fleet.last_frame = now
        if payload.startswith(b'{"type": "presence"'):
            fleet.frames["presence"] += 1
        elif (at := payload.find(fleet.marker)) >= 0:
            fleet.frames["message"] += 1
            start = at + len(fleet.marker)
            fleet.arrived(int(payload[start : start + 4]), now)
        elif payload.startswith(b'{"type": "welcome"'):
            fleet.frames["welcome"] += 1
            if not self.opened.done():
                fleet.sockets.append(self)
                self.opened.set_result(None)
        else:
            fleet.frames["other"] += 1

    def on_closed(self) -> None:
        fleet = self.fleet
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(self.error or f"closed ({self.close_code})"))
            return
        if self in fleet.sockets:
            fleet.sockets.remove(self)
            fleet.close_codes[str(self.close_code or self.error)] += 1
            fleet.check_waiters()


@dataclass
class Fleet:
    """One client process's sockets and what they received."""

    host: str
    port: int
    path: str
    cookie: str
    marker: bytes  # the body prefix of this run's broadcasts
    concurrency: int
    body_size: int = 0
    open_timeout: float = 60.0
    sockets: list[RoomClient] = field(default_factory=list)  # welcomed and still open
    arrivals: dict[int, list[float]] = field(default_factory=dict)
    waiters: dict[int, asyncio.Event] = field(default_factory=dict)
    frames: Counter[str] = field(default_factory=Counter)
    close_codes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    last_frame: float = 0.0

    async def connect(self, count: int, deadline: float) -> dict[str, Any]:
        """Open ``count`` more sockets; each is connected once its welcome arrived.

        No handshake starts after ``deadline`` (``time.monotonic()``, the same clock
        in every process), so the ramp as a whole stays bounded.
        """
        gate = asyncio.Semaphore(self.concurrency)
        started = time.monotonic()
        results = await asyncio.gather(*(self._open(gate, deadline) for _ in range(count)))
        failed = [error for error, _ in results if error not in (None, SKIPPED)]
        self.errors.extend(failed)
        return {
            "opened": sum(1 for error, _ in results if error is None),
            "failed": len(failed),
            "skipped": sum(1 for error, _ in results if error == SKIPPED),
            "errors": failed[:5],
            "joins": [seconds for error, seconds in results if error is None],
            "seconds": time.monotonic() - started,
        }

    async def _open(self, gate: asyncio.Semaphore, deadline: float) -> tuple[str | None, float]:
        """(None or what went wrong, seconds from the TCP connect to the welcome)."""
        async with gate:
            started = time.monotonic()
            if started > deadline:
                return SKIPPED, 0.0
            request, accept = upgrade_request(
                self.host, self.port, self.path, {"Cookie": self.cookie}
            )
            try:
                await open_raw(
                    RoomClient, self.host, self.port, self.open_timeout, request, accept, self
                )
            except Exception as exc:  # noqa: BLE001 - reported, the ramp stops on it
                return f"{type(exc).__name__}: {exc}", 0.0
            return None, time.monotonic() - started

    def arrived(self, number: int, now: float) -> None:
        arrived = self.arrivals.setdefault(number, [])
        arrived.append(now)
        waiter = self.waiters.get(number)
        if waiter is not None and len(arrived) >= len(self.sockets):
            waiter.set()

    def check_waiters(self) -> None:
        for number, waiter in self.waiters.items():
            if len(self.arrivals.get(number, ())) >= len(self.sockets):
                waiter.set()

    def status(self) -> dict[str, Any]:
        return {
            "open": len(self.sockets),
            "frames": dict(self.frames),
            "close_codes": dict(self.close_codes),
            "errors": self.errors[-5:],
            "idle": time.monotonic() - self.last_frame if self.last_frame else None,
            "rss_kib": rss_kib(os.getpid()),
        }

    async def send(self, number: int) -> float:
        """Send broadcast ``number`` from the first socket; the moment just before."""
        body = f"{self.marker.decode()}{number:04d} "
        body += "x" * (self.body_size - len(body))
        frame = json.dumps({"type": "message", "body": body, "client_id": str(number)})
        sent_at = time.monotonic()
        self.sockets[0].send(1, frame.encode())
        return sent_at

    async def collect(self, number: int, seconds: float) -> dict[str, Any]:
        """Wait (at most ``seconds``) until every open socket has broadcast ``number``."""
        waiter = self.waiters.setdefault(number, asyncio.Event())
        self.check_waiters()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), seconds)
        del self.waiters[number]
        return {"arrivals": self.arrivals.pop(number, []), "open": len(self.sockets)}


async def _serve_commands(conn: multiprocessing.connection.Connection, fleet: Fleet) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def readable() -> None:
        try:
            commands.put_nowait(conn.recv())
        except EOFError:  # the coordinator is gone: stop
            loop.remove_reader(conn.fileno())
            commands.put_nowait(("quit",))

    loop.add_reader(conn.fileno(), readable)
    while True:
        command = await commands.get()
        kind = command[0]
        if kind == "quit":
            return
        try:
            if kind == "connect":
                reply: Any = await fleet.connect(command[1], command[2])
            elif kind == "status":
                reply = fleet.status()
            elif kind == "send":
                reply = await fleet.send(command[1])
            elif kind == "collect":
                reply = await fleet.collect(command[1], command[2])
            else:
                reply = {"error": f"unknown command {kind!r}"}
        except Exception as exc:  # noqa: BLE001 - the coordinator reports it
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        conn.send(reply)


def client_process(conn: multiprocessing.connection.Connection, fleet: Fleet) -> None:
    """A client process's body (a module-level function, so ``spawn`` can import it).

    It ends on ``quit`` or when the coordinator's end of the pipe closes; its
    sockets are then closed by the kernel, without closing handshakes, which
    is quick even for thousands.
    """
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_commands(conn, fleet))


# -- the server's processes -------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def gunicorn_pids() -> tuple[list[int], list[int]]:
    """gunicorn's master (our child running ``-m gunicorn``) and its workers."""
    me = os.getpid()
    masters, parents = [], {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = proc_stat(int(entry.name))
        if fields is None:
            continue
        parents[int(entry.name)] = int(fields[1])
        if int(fields[1]) == me:
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                if b"gunicorn" in cmdline:
                    masters.append(int(entry.name))
    return masters, sorted(pid for pid, parent in parents.items() if parent in masters)


@dataclass(frozen=True)
class Sample:
    """The machine at one moment: CPU seconds of gunicorn, of the clients, of everything;
    gunicorn's resident memory and open files."""

    server_cpu_s: float
    client_cpu_s: float
    machine_cpu_s: float
    rss_mib: float
    fds: tuple[int, ...]  # open files of each worker: sockets mostly; gunicorn does not balance

    @classmethod
    def now(cls, client_pids: list[int]) -> Sample:
        masters, workers = gunicorn_pids()
        fds = []
        for pid in workers:
            with contextlib.suppress(OSError):
                fds.append(len(os.listdir(f"/proc/{pid}/fd")))
        return cls(
            cpu_seconds(masters + workers),
            cpu_seconds(client_pids),
            machine_busy_seconds(),
            sum(rss_kib(pid) for pid in masters + workers) / 1024,
            tuple(fds),
        )


# -- setting up: database, user, room, login -----------------------------------------------


@contextlib.contextmanager
def redis_prefix(url: str) -> Iterator[tuple[redis.Redis, str]]:
    """A Redis client and a fresh key prefix; every key containing it is deleted at the end."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=30)
    client.ping()
    prefix = f"bench_fanout_{secrets.token_hex(4)}:"
    try:
        yield client, prefix
    finally:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        log(f"deleted {len(keys)} Redis keys containing {prefix}")
        client.close()


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
        CHAT_RATE_LIMIT=CHAT_RATE_LIMIT,
        WEBSOCKET_ECHO="1",  # for the probes (Probes): nothing else uses it
        GUNICORN_WORKER_CLASS="gevent",
        GUNICORN_WORKER_CONNECTIONS=str(args.worker_connections),
    )
    return gunicorn_env(base, port, args.workers, None)


def prepare(env: dict[str, str], password: str) -> None:
    """Migrate the bench database and create the user and the room, as the app does."""
    from apps.accounts.models import create_user
    from apps.accounts.passwords import hash_password
    from apps.realtime.models import create_room
    from project import create_app
    from project.migrations import migrate

    app = create_app(environ=env)
    with contextlib.redirect_stdout(sys.stderr):  # stdout is only the report
        applied = migrate(app)
    log(f"migrated: {', '.join(applied) or 'nothing to do'}")
    with app.app_context():
        user = create_user(USERNAME, f"{USERNAME}@bench.invalid", hash_password(password))
        create_room(ROOM, user.id)


def log_in(port: int, password: str) -> str:
    """Log in through the real form; the ``Cookie`` header value every socket sends."""
    return f"{SESSION_COOKIE}={harness_log_in(port, USERNAME, password)}"


# -- the measurement --------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One ramp step: sockets connected after it, and what it cost."""

    connected: int
    seconds: float
    failed: int
    join_p50_s: float | None  # from the TCP connect to the welcome, this step's sockets
    join_max_s: float | None
    probe_max_ms: float | None  # slowest /ws/echo round trip during the step
    server_cpu_s: float
    client_cpu_s: float
    machine_cpu_s: float  # every process's, ours, the database's and anyone else's
    redis_cpu_s: float | None
    server_rss_mib: float
    server_fds: tuple[int, ...]  # per worker
    presence_frames: int  # received by all clients during the step


@dataclass
class Broadcast:
    number: int
    expected: int
    received: int
    last_ms: float | None
    median_ms: float | None


@dataclass
class Report:
    workers: int
    steps: list[Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    settle_s: float = 0.0
    broadcasts: list[Broadcast] = field(default_factory=list)
    close_codes: Counter[str] = field(default_factory=Counter)
    final_open: int = 0
    client_rss_mib: float = 0.0
    broadcast_seconds: float = 0.0  # the whole broadcast phase, pauses included
    broadcast_server_cpu_s: float = 0.0
    broadcast_client_cpu_s: float = 0.0
    broadcast_machine_cpu_s: float = 0.0
    broadcast_probe_max_ms: float | None = None
    run_log_errors: list[str] = field(default_factory=list)  # before the clients left
    teardown_log_errors: list[str] = field(default_factory=list)  # as they left, and after


def redis_cpu(client: redis.Redis) -> float | None:
    """Redis's own CPU seconds (user + system), from INFO; None if it does not say."""
    try:
        info = client.info("cpu")
    except redis.RedisError:
        return None
    return float(info.get("used_cpu_user", 0)) + float(info.get("used_cpu_sys", 0))


def total_frames(statuses: list[dict[str, Any]], kind: str) -> int:
    return sum(s["frames"].get(kind, 0) for s in statuses)


def ramp(
    args: argparse.Namespace,
    clients: ClientProcesses,
    rcli: redis.Redis,
    probes: Probes,
    report: Report,
) -> int:
    """Connect up to ``--clients`` sockets, ``--step`` at a time; the number connected."""
    connected = 0
    deadline = time.monotonic() + args.ramp_timeout
    processes = len(clients.pipes)
    presence_before = 0
    while connected < args.clients:
        left = deadline - time.monotonic()
        if left <= 0:
            report.errors.append(f"ramp stopped: --ramp-timeout {args.ramp_timeout:g} s")
            break
        step = min(args.step, args.clients - connected)
        shares = [step // processes + (i < step % processes) for i in range(processes)]
        before, redis_before = Sample.now(clients.pids()), redis_cpu(rcli)
        started = time.monotonic()
        # A handshake started just before the deadline may take --open-timeout twice over
        # (connect, then welcome); the processes answer once all of theirs are done.
        replies = clients.ask(
            [("connect", n, deadline) if n else None for n in shares],
            left + 2 * args.open_timeout + REPLY_MARGIN_S,
        )
        seconds = time.monotonic() - started
        after, redis_after = Sample.now(clients.pids()), redis_cpu(rcli)
        probe_rtts = probes.since(started)
        opened = sum(r["opened"] for r in replies if r)
        failed = sum(r["failed"] for r in replies if r)
        skipped = sum(r["skipped"] for r in replies if r)
        joins = sorted(t for r in replies if r for t in r["joins"])
        for r in replies:
            if r and r.get("errors"):
                report.errors.extend(r["errors"])
            if r and r.get("error"):
                report.errors.append(r["error"])
        statuses = clients.all(("status",), REPLY_MARGIN_S)
        presence = total_frames(statuses, "presence")
        step_presence, presence_before = presence - presence_before, presence
        redis_s = (
            None if redis_before is None or redis_after is None else redis_after - redis_before
        )
        connected += opened
        step_record = Step(
            connected=connected,
            seconds=seconds,
            failed=failed,
            join_p50_s=percentile(joins, 50),
            join_max_s=joins[-1] if joins else None,
            probe_max_ms=max(probe_rtts) * 1000 if probe_rtts else None,
            server_cpu_s=after.server_cpu_s - before.server_cpu_s,
            client_cpu_s=after.client_cpu_s - before.client_cpu_s,
            machine_cpu_s=after.machine_cpu_s - before.machine_cpu_s,
            redis_cpu_s=redis_s,
            server_rss_mib=after.rss_mib,
            server_fds=after.fds,
            presence_frames=step_presence,
        )
        report.steps.append(step_record)
        log(
            f"ramp: {connected:,} connected (+{opened:,} in {seconds:.1f} s, {failed} failed); "
            f"join p50 {fmt(step_record.join_p50_s)} s, max {fmt(step_record.join_max_s)} s; "
            f"probe RTT max {fmt(step_record.probe_max_ms)} ms; "
            f"CPU s: server {step_record.server_cpu_s:.1f}, clients "
            f"{step_record.client_cpu_s:.1f}, machine {step_record.machine_cpu_s:.1f}; "
            f"server RSS {after.rss_mib:,.0f} MiB, fds per worker {fds_text(after.fds)}; "
            f"{step_presence:,} presence frames"
        )
        if failed or any(r and r.get("error") for r in replies):
            report.errors.append(f"ramp stopped at {connected:,}: {failed} connections failed")
            break
        if skipped:
            report.errors.append(
                f"ramp stopped at {connected:,}: --ramp-timeout {args.ramp_timeout:g} s"
            )
            break
    return connected


class Probes:
    """Echo sockets on ``/ws/echo`` that measure how responsive the workers stay.

    Each probe (a thread with a `websockets` sync client, in this mostly idle
    process) sends a short message every ``interval`` seconds and times the
    echo. The echo needs nothing from Redis or the database, so a slow one
    means the worker could not run it: its event loop was busy elsewhere (the
    room's fan-out), not that the clients were slow. gunicorn does not balance
    accepts, so with a few probes most runs have one on each worker, not always.
    """

    def __init__(self, url: str, count: int, interval: float = 0.25) -> None:
        self.url = url
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (sent at, round trip s)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"probe-{i}", daemon=True) for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        from websockets.sync.client import connect

        try:
            with connect(self.url, compression=None, open_timeout=60, close_timeout=2) as ws:
                while not self._stop.wait(self.interval):
                    sent = time.monotonic()
                    ws.send("probe")
                    ws.recv(timeout=300)
                    self.samples.append((sent, time.monotonic() - sent))
        except Exception as exc:  # noqa: BLE001 - reported; the benchmark goes on without it
            if not self._stop.is_set():
                self.errors.append(f"probe: {type(exc).__name__}: {exc}")

    def since(self, started: float) -> list[float]:
        return [rtt for sent, rtt in list(self.samples) if sent >= started]

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def settle(args: argparse.Namespace, clients: ClientProcesses, limit: float) -> float:
    """Wait until no client process received a frame for ``--quiet`` s (at most ``limit`` s)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        statuses = clients.all(("status",), REPLY_MARGIN_S)
        idle = [s["idle"] for s in statuses if s["idle"] is not None]
        if not idle or min(idle) >= args.quiet:
            return time.monotonic() - started
        time.sleep(min(0.25, args.quiet))
    raise RuntimeError(f"the room did not go quiet in {limit:.0f} s (presence frames still flow)")


def broadcast(args: argparse.Namespace, clients: ClientProcesses, number: int) -> Broadcast:
    """One timed message: sent by process 0's first socket, collected from every process."""
    commands: list[tuple[Any, ...] | None] = [None] * len(clients.pipes)
    commands[0] = ("send", number)
    sent_at = clients.ask(commands, REPLY_MARGIN_S)[0]
    if not isinstance(sent_at, float):
        raise RuntimeError(f"sending broadcast {number} failed: {sent_at}")
    replies = clients.all(("collect", number, args.timeout), args.timeout + REPLY_MARGIN_S)
    arrivals = sorted(t for r in replies for t in r["arrivals"])
    expected = sum(r["open"] for r in replies)
    last = (arrivals[-1] - sent_at) * 1000 if arrivals else None
    median = (statistics.median(arrivals) - sent_at) * 1000 if arrivals else None
    complete = len(arrivals) >= expected
    return Broadcast(number, expected, len(arrivals), last if complete else None, median)


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; gunicorn and the clients
    inherit it. One gunicorn worker may get every socket (gunicorn does not balance accepts).

    Raises:
        UsageError: the hard limit is below ``needed``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, needed) if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log(f"raised RLIMIT_NOFILE from {soft:,} to {target:,}")
    if target < needed:
        raise UsageError(
            f"--clients needs about {needed:,} open files per process, the hard limit is "
            f"{hard:,}: raise it (ulimit -Hn, or LimitNOFILE=) or lower --clients"
        )
    return target


def run(args: argparse.Namespace) -> Report:
    raise_fd_limit(args.clients + 1024)
    password = secrets.token_urlsafe(16)
    marker = f"fanout-{secrets.token_hex(3)}-"
    with (
        tempfile.TemporaryDirectory(prefix="bench_fanout_") as tmp,
        redis_prefix(args.redis_url) as (rcli, prefix),
        bench_database(args.mysql_url, "bench_fanout_") as database,
    ):
        port = free_port()
        env = server_env(args, database.app_url, prefix, port)
        prepare(env, password)
        log_path = Path(tmp) / "gunicorn.log"
        report = Report(workers=args.workers)
        with gunicorn_server(OURS, env, port, log_path, "/healthz"):
            cookie = log_in(port, password)
            probes = Probes(f"ws://127.0.0.1:{port}/ws/echo", args.probes)
            fleet = Fleet(
                "127.0.0.1",
                port,
                f"/ws/rooms/{ROOM}",
                cookie,
                marker.encode(),
                args.concurrency,
                args.body_size,
                args.open_timeout,
            )
            clients = ClientProcesses(client_process, [(fleet,)] * args.processes)
            try:
                connected = ramp(args, clients, rcli, probes, report)
                if connected == 0:
                    raise RuntimeError(f"no socket connected: {report.errors[:3]}")
                log("waiting for the room to go quiet")
                report.settle_s = settle(args, clients, SETTLE_LIMIT_S)
                log(f"quiet after {report.settle_s:.1f} s; {args.broadcasts} broadcasts")
                before, started = Sample.now(clients.pids()), time.monotonic()
                for number in range(args.broadcasts):
                    result = broadcast(args, clients, number)
                    report.broadcasts.append(result)
                    log(
                        f"broadcast {number}: {result.received:,}/{result.expected:,}, last "
                        f"{fmt(result.last_ms)} ms, median {fmt(result.median_ms)} ms"
                    )
                    time.sleep(args.interval)
                after = Sample.now(clients.pids())
                report.broadcast_seconds = time.monotonic() - started
                report.broadcast_server_cpu_s = after.server_cpu_s - before.server_cpu_s
                report.broadcast_client_cpu_s = after.client_cpu_s - before.client_cpu_s
                report.broadcast_machine_cpu_s = after.machine_cpu_s - before.machine_cpu_s
                rtts = probes.since(started)
                report.broadcast_probe_max_ms = max(rtts) * 1000 if rtts else None
                statuses = clients.all(("status",), REPLY_MARGIN_S)
                for status in statuses:
                    report.close_codes.update(status["close_codes"])
                report.final_open = sum(s["open"] for s in statuses)
                report.client_rss_mib = sum(s["rss_kib"] for s in statuses) / 1024
            finally:
                run_log_size = log_path.stat().st_size
                probes.stop()
                report.errors.extend(probes.errors)
                clients.stop()
        if args.server_log:
            shutil.copyfile(log_path, args.server_log)
            log(f"gunicorn's log copied to {args.server_log}")
        text = log_path.read_bytes()
        report.run_log_errors = error_lines(text[:run_log_size])
        report.teardown_log_errors = error_lines(text[run_log_size:])
    return report


def error_lines(text: bytes) -> list[str]:
    """The lines of gunicorn's log that tell of a problem: exceptions, errors, timeouts."""
    words = ("Error", "ERROR", "WORKER TIMEOUT", "Traceback", "Exception")
    lines = text.decode(errors="replace").splitlines()
    return [
        line
        for i, line in enumerate(lines)
        if not line.startswith(" ")
        and any(w in line for w in words)
        # not an exception that another one replaced: its last line is reported instead
        and not (i + 2 < len(lines) and lines[i + 2].startswith("During handling"))
    ]


# -- the report ------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def fds_text(fds: tuple[int, ...]) -> str:
    return " / ".join(f"{n:,}" for n in fds)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (with 20 values, p99 is the largest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-p * len(ordered) // 100)) - 1))]


def render(args: argparse.Namespace, report: Report) -> list[str]:
    connected = report.steps[-1].connected if report.steps else 0
    server = "the server as shipped"
    lines = [
        f"{connected:,} of {args.clients:,} sockets connected in one room; {server}; gunicorn "
        f"`-c gunicorn.conf.py`, {args.workers} gevent workers x {args.worker_connections:,} "
        f"worker_connections, Redis pub/sub; {args.processes} client processes of raw-socket "
        f"asyncio clients, {os.cpu_count()} CPUs, all on one machine. Broadcast body "
        f"{args.body_size or 'about 20'} characters" + ".",
        "",
        "**Ramp** (sockets added per step; a socket counts once its `welcome` arrived):",
        "",
        "| connected | step s | sockets/s | failed | join p50 s | join max s "
        "| probe RTT max ms | server CPU s | clients CPU s | Redis CPU s | machine CPU % "
        "| presence frames | server RSS MiB | fds per worker |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    previous = 0
    cores = os.cpu_count() or 1
    for s in report.steps:
        added = s.connected - previous
        previous = s.connected
        rate = added / s.seconds if s.seconds else 0
        busy = 100 * s.machine_cpu_s / (s.seconds * cores) if s.seconds else 0
        lines.append(
            f"| {s.connected:,} | {s.seconds:.1f} | {rate:,.0f} | {s.failed} "
            f"| {fmt(s.join_p50_s, 2)} | {fmt(s.join_max_s, 2)} | {fmt(s.probe_max_ms, 0)} "
            f"| {s.server_cpu_s:.1f} | {s.client_cpu_s:.1f} | {fmt(s.redis_cpu_s)} "
            f"| {busy:.0f} | {s.presence_frames:,} | {s.server_rss_mib:,.0f} "
            f"| {fds_text(s.server_fds)} |"
        )
    lasts = [b.last_ms for b in report.broadcasts if b.last_ms is not None]
    medians = [b.median_ms for b in report.broadcasts if b.median_ms is not None]
    incomplete = [b for b in report.broadcasts if b.last_ms is None]
    p99 = percentile(lasts, 99)
    if connected < args.clients:
        verdict = f"not measured: {connected:,} of {args.clients:,} sockets"
    elif p99 is not None and p99 < 250 and not incomplete:
        verdict = "met"
    else:
        verdict = "**NOT met**"
    lines += [
        "",
        f"Room quiet {report.settle_s:.1f} s after the last welcome. "
        + f"**Broadcasts** ({len(report.broadcasts)}, {args.interval:g} s apart, "
        "delay = arrival minus send, ms):",
        "",
        "| sockets | broadcasts | complete | last arrival p50 | last arrival p99 "
        "| last arrival max | median arrival p50 | target p99 < 250 ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| {connected:,} | {len(report.broadcasts)} | {len(lasts)} "
        f"| {fmt(percentile(lasts, 50))} | {fmt(p99)} | {fmt(max(lasts) if lasts else None)} "
        f"| {fmt(percentile(medians, 50))} "
        f"| {verdict} |",
        "",
        "Per broadcast, last arrival ms (with 20 broadcasts, p99 is the slowest): "
        + ", ".join(fmt(b.last_ms, 0) for b in report.broadcasts),
    ]
    if incomplete:
        lines.append(
            "WARNING: incomplete broadcasts (received/expected): "
            + ", ".join(f"#{b.number} {b.received}/{b.expected}" for b in incomplete)
        )
    lost = sum(report.close_codes.values())
    lines.append(
        f"\nSockets open at the end: {report.final_open:,}; closed during the run: {lost}"
        + (f" (close codes {dict(report.close_codes)})" if lost else "")
        + f"; client processes' RSS {report.client_rss_mib:,.0f} MiB."
    )
    if report.broadcasts:
        frames = sum(b.received for b in report.broadcasts)
        per_frame = report.broadcast_server_cpu_s / frames * 1e6 if frames else 0
        busy = report.broadcast_machine_cpu_s / report.broadcast_seconds / (os.cpu_count() or 1)
        others = max(
            0.0,
            report.broadcast_machine_cpu_s
            - report.broadcast_server_cpu_s
            - report.broadcast_client_cpu_s,
        )
        lines.append(
            f"Broadcast phase ({report.broadcast_seconds:.1f} s, pauses included): server CPU "
            f"{report.broadcast_server_cpu_s:.1f} s ({per_frame:.0f} µs per delivered frame), "
            f"clients CPU {report.broadcast_client_cpu_s:.1f} s, everything else "
            f"{others:.1f} s, machine busy {100 * busy:.0f} %; "
            f"slowest probe echo {fmt(report.broadcast_probe_max_ms, 0)} ms."
        )
    for error in sorted(set(report.errors))[:10]:
        lines.append(f"- error: {error}")
    for when, errors in (
        ("while connecting and broadcasting", report.run_log_errors),
        ("after the clients left (teardown)", report.teardown_log_errors),
    ):
        if errors:
            kinds = Counter(
                LOG_PREFIX.sub("", line) for line in errors if not line.startswith("Traceback")
            )
            lines.append(
                f"- gunicorn's log {when}: {len(errors)} error lines; most frequent: "
                + "; ".join(f"{n} x `{line[:120]}`" for line, n in kinds.most_common(4))
            )
    return lines


def run_and_print(args: argparse.Namespace) -> int:
    report = run(args)
    print("\n".join(render(args, report)))
    complete = report.broadcasts and all(b.last_ms is not None for b in report.broadcasts)
    reached = report.steps and report.steps[-1].connected == args.clients
    return 0 if complete and reached else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main("fanout", lambda: run_and_print(args), (redis.RedisError, OSError))


if __name__ == "__main__":  # until it is listed in bench.BENCHMARKS: python -m bench.fanout
    sys.exit(main())
