"""The client processes of ``python -m bench soak``: room sockets that chat and time deliveries.

Each client process runs one asyncio loop with its share of the sockets
(:class:`SoakSocket`, the minimal RFC 6455 client of :mod:`bench.echo`) and
answers the coordinator's commands over a :mod:`multiprocessing` pipe:

* ``("connect", deadline)``: open every socket not yet open (at most
  ``concurrency`` handshakes in flight); a socket counts once its ``welcome``
  arrived;
* ``("hold", t0, minutes)``: from ``t0`` on, each socket sends one ``message``
  a minute at its own offset within the minute (so the sends are spread
  evenly over every socket of every process), with a unique ``client_id``
  that carries the moment it was sent (``time.monotonic()``, one clock for
  every process of the machine);
* ``("sample",)``: counters, and the latency histogram of the window since
  the last sample;
* ``("final",)``: every ``client_id`` seen with how many sockets got it, every
  ``client_id`` sent, refused, or not sent (its socket was down), the whole
  latency histogram;
* ``("close", seconds)``: a close handshake (1000) on every socket, aborting
  the ones that do not finish in ``seconds``;
* ``("quit",)``.

Frames are classified by their first bytes and the chat messages picked apart
with ``bytes.find``, never parsed as JSON: the clients share the machine's
cores with the server, and every microsecond they spend per frame would be
measured as delivery latency. A socket the server drops during the hold is
reconnected after a second with ``?after=`` the last message id it saw, as
the room page does; the messages its ``welcome`` brings are counted as
*recovered*, not as live deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing.connection
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.echo import RawClient, open_raw, upgrade_request

RECONNECT_DELAY_S = 1.0
MESSAGE = b'{"type": "message", "id": '
PRESENCE = b'{"type": "presence"'
WELCOME = b'{"type": "welcome"'
ERROR = b'{"type": "error"'

# Latency histogram: 0.1 ms bins below 1 s, 10 ms bins from 1 s to 60 s, one overflow bin.
FINE_BINS = 10_000
COARSE_BINS = 5_900
BINS = FINE_BINS + COARSE_BINS + 1


def bin_of(ms: float) -> int:
    if ms < 1000.0:
        return int(ms * 10) if ms > 0 else 0
    return min(BINS - 1, FINE_BINS + int((ms - 1000.0) / 10))


def bin_ms(index: int) -> float:
    """The upper edge of a bin, in milliseconds (what a percentile reports)."""
    if index < FINE_BINS:
        return (index + 1) / 10
    if index < BINS - 1:
        return 1000.0 + (index - FINE_BINS + 1) * 10
    return float("inf")


def hist_percentile(hist: dict[int, int], p: float) -> float | None:
    """Nearest-rank percentile of a sparse histogram {bin: count}, in ms (bin's upper edge)."""
    total = sum(hist.values())
    if not total:
        return None
    rank = max(1, -(-p * total // 100))
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return bin_ms(index)
    return bin_ms(max(hist))


@dataclass(frozen=True)
class SocketSpec:
    """One socket: its global number, room, the Cookie header, its offset in each minute."""

    index: int
    room: str
    cookie: str
    offset_s: float


class SoakSocket(RawClient):
    """One member of a room: times the run's messages, follows the last id it saw."""

    def __init__(self, request: bytes, accept: bytes, fleet: Fleet, spec: SocketSpec) -> None:
        super().__init__(request, accept)
        self.fleet = fleet
        self.spec = spec
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_id = 0
        self.reconnect = False  # opened again after a drop, with ?after=
        self.welcomed_ids: set[int] | None = None  # on a reconnect: ids the welcome brought

    def on_message(self, opcode: int, payload: bytes, now: float) -> None:
        fleet = self.fleet
        if payload.startswith(MESSAGE):
            fleet.on_chat(self, payload, now)
        elif payload.startswith(PRESENCE):
            fleet.presence += 1
        elif payload.startswith(WELCOME):
            fleet.on_welcome(self, payload)
        elif payload.startswith(ERROR):
            fleet.on_error(payload)
        else:
            fleet.other_frames += 1

    def on_closed(self) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(self.error or f"closed ({self.close_code})"))
            return
        self.fleet.on_drop(self)


class Fleet:
    """One client process's sockets and everything they saw."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.host: str = config["host"]
        self.port: int = config["port"]
        self.marker: bytes = config["marker"].encode()
        self.concurrency: int = config["concurrency"]
        self.open_timeout: float = config["open_timeout"]
        self.specs: list[SocketSpec] = config["specs"]
        self.live: dict[int, SoakSocket] = {}  # spec.index -> its open (welcomed) socket
        self.holding = False
        self.closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        # counters
        # messages are keyed "socket.minute" (their client_id is marker + key + "." + sent_us)
        self.counts: dict[bytes, int] = {}  # key -> deliveries (live and recovered)
        self.sent: list[str] = []
        self.not_sent: list[str] = []  # the socket was down at its send time
        self.refused: dict[str, str] = {}  # key -> error code
        self.delivered = 0  # live deliveries of this run's messages
        self.recovered = 0  # brought by a reconnect's welcome
        self.duplicates = 0
        self.presence = 0
        self.other_frames = 0
        self.errors: Counter[str] = Counter()  # error frames by code
        self.drops: Counter[str] = Counter()  # close code or error of sockets lost in the hold
        self.reconnects = 0
        self.reconnect_failures: Counter[str] = Counter()
        self.connect_failures: Counter[str] = Counter()
        self.window: dict[int, int] = {}
        self.total: dict[int, int] = {}
        self.send_lag_max = 0.0  # how late the scheduler sent a message, at worst (s)

    # -- frames ---------------------------------------------------------------------------

    def on_chat(self, sock: SoakSocket, payload: bytes, now: float) -> None:
        comma = payload.find(b",", 26)
        message_id = int(payload[26:comma])
        if sock.welcomed_ids is not None and message_id in sock.welcomed_ids:
            self.duplicates += 1  # the welcome brought it already
            return
        if message_id > sock.last_id:
            sock.last_id = message_id
        marker = self.marker
        at = payload.find(marker, comma)
        if at < 0:
            self.other_frames += 1
            return
        end = payload.find(b'"', at)
        dot = payload.rfind(b".", at, end)
        key = payload[at + len(marker) : dot]  # "socket.minute": what the body says too
        self.counts[key] = self.counts.get(key, 0) + 1
        sent_us = int(payload[dot + 1 : end])
        index = bin_of(now * 1000.0 - sent_us / 1000.0)
        self.window[index] = self.window.get(index, 0) + 1
        self.delivered += 1

    def on_welcome(self, sock: SoakSocket, payload: bytes) -> None:
        if sock.reconnect and sock.welcomed_ids is None:  # count what it missed and got back
            data = json.loads(payload)
            ids = set()
            for message in data.get("messages", ()):
                ids.add(message["id"])
                sock.last_id = max(sock.last_id, message["id"])
                # stored messages have no client_id: the body names the socket and minute
                words = str(message.get("body", "")).split()
                if len(words) == 3 and words[0] == "soak":
                    key = f"{words[1]}.{words[2]}".encode()
                    self.counts[key] = self.counts.get(key, 0) + 1
                    self.recovered += 1
            sock.welcomed_ids = ids
        if not sock.opened.done():
            sock.opened.set_result(None)

    def on_error(self, payload: bytes) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            self.errors["unparsable"] += 1
            return
        code = str(data.get("code"))
        self.errors[code] += 1
        client_id = data.get("client_id")
        marker = self.marker.decode()
        if isinstance(client_id, str) and client_id.startswith(marker):
            self.refused[client_id[len(marker) : client_id.rfind(".")]] = code

    def on_drop(self, sock: SoakSocket) -> None:
        if self.live.get(sock.spec.index) is not sock:
            return
        del self.live[sock.spec.index]
        if self.closing:
            return
        self.drops[str(sock.close_code or sock.error)] += 1
        if self.holding:
            task = asyncio.get_running_loop().create_task(self._reconnect(sock.spec, sock.last_id))
            self._tasks.add(task)  # a task nobody refers to may be collected mid-way
            task.add_done_callback(self._tasks.discard)

    # -- connecting -----------------------------------------------------------------------

    async def _open(self, spec: SocketSpec, after: int | None = None) -> SoakSocket:
        path = f"/ws/rooms/{spec.room}" + ("" if after is None else f"?after={after}")
        request, accept = upgrade_request(self.host, self.port, path, {"Cookie": spec.cookie})

        def factory() -> SoakSocket:
            sock = SoakSocket(request, accept, self, spec)
            sock.last_id = after or 0
            sock.reconnect = after is not None
            return sock

        sock: SoakSocket = await open_raw(factory, self.host, self.port, self.open_timeout)
        return sock

    async def connect(self, deadline: float) -> dict[str, Any]:
        """Open every socket that is not open; what happened, with the join times."""
        gate = asyncio.Semaphore(self.concurrency)
        started = time.monotonic()
        joins: list[float] = []
        failures: Counter[str] = Counter()

        async def one(spec: SocketSpec) -> None:
            async with gate:
                begun = time.monotonic()
                if begun > deadline:
                    failures["skipped: past the ramp deadline"] += 1
                    return
                try:
                    sock = await self._open(spec)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    failures[f"{type(exc).__name__}: {exc}"[:160]] += 1
                    return
                if sock.closed:
                    failures[str(sock.close_code or sock.error)] += 1
                    return
                self.live[spec.index] = sock
                joins.append(time.monotonic() - begun)

        await asyncio.gather(*(one(s) for s in self.specs if s.index not in self.live))
        self.connect_failures.update(failures)
        return {
            "open": len(self.live),
            "failures": dict(failures),
            "joins": joins,
            "seconds": time.monotonic() - started,
        }

    async def _reconnect(self, spec: SocketSpec, after: int) -> None:
        delay = RECONNECT_DELAY_S
        while self.holding and not self.closing:
            await asyncio.sleep(delay)
            try:
                sock = await self._open(spec, after)
            except Exception as exc:  # noqa: BLE001 - counted; tried again with backoff
                self.reconnect_failures[f"{type(exc).__name__}: {exc}"[:160]] += 1
                delay = min(30.0, delay * 2)
                continue
            if not sock.closed:
                self.live[spec.index] = sock
                self.reconnects += 1
            return

    # -- the hold -------------------------------------------------------------------------

    async def hold(self, t0: float, minutes: int) -> None:
        """Each socket sends one message a minute, at ``t0 + minute * 60 + its offset``."""
        self.holding = True
        schedule = sorted(self.specs, key=lambda s: s.offset_s)
        for minute in range(minutes):
            for spec in schedule:
                due = t0 + minute * 60 + spec.offset_s
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    self.send_lag_max = max(self.send_lag_max, -wait)
                self._send(spec, minute)
        # the hold ends at t0 + minutes * 60; reconnecting stops then
        await asyncio.sleep(max(0.0, t0 + minutes * 60 - time.monotonic()))
        self.holding = False

    def _send(self, spec: SocketSpec, minute: int) -> None:
        key = f"{spec.index}.{minute}"
        client_id = f"{self.marker.decode()}{key}.{int(time.monotonic() * 1e6)}"
        sock = self.live.get(spec.index)
        if sock is None or sock.closed:
            self.not_sent.append(key)
            return
        frame = json.dumps(
            {"type": "message", "body": f"soak {spec.index} {minute}", "client_id": client_id}
        )
        sock.send(1, frame.encode())
        self.sent.append(key)

    # -- reports --------------------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        window, self.window = self.window, {}
        for index, count in window.items():
            self.total[index] = self.total.get(index, 0) + count
        return {
            "open": len(self.live),
            "sent": len(self.sent),
            "not_sent": len(self.not_sent),
            "refused": len(self.refused),
            "delivered": self.delivered,
            "recovered": self.recovered,
            "duplicates": self.duplicates,
            "presence": self.presence,
            "other_frames": self.other_frames,
            "errors": dict(self.errors),
            "drops": dict(self.drops),
            "reconnects": self.reconnects,
            "reconnect_failures": dict(self.reconnect_failures),
            "send_lag_max": self.send_lag_max,
            "window": window,
            "rss_kib": _rss_kib(),
        }

    def final(self) -> dict[str, Any]:
        report = self.sample()
        report.update(
            counts={k.decode(): v for k, v in self.counts.items()},
            sent_ids=self.sent,
            not_sent_ids=self.not_sent,
            refused_ids=self.refused,
            total=self.total,
            connect_failures=dict(self.connect_failures),
        )
        return report

    async def close(self, seconds: float) -> dict[str, Any]:
        """A close handshake on every socket; abort those not closed within ``seconds``."""
        self.closing = True
        self.holding = False
        sockets = list(self.live.values())
        started = time.monotonic()
        for sock in sockets:
            sock.send(8, (1000).to_bytes(2, "big"))
        deadline = started + seconds
        while time.monotonic() < deadline and any(not s.closed for s in sockets):
            await asyncio.sleep(0.1)
        clean = sum(1 for s in sockets if s.closed and s.close_code == 1000)
        unclosed = [s for s in sockets if not s.closed]
        for sock in unclosed:
            if sock.transport is not None:
                sock.transport.abort()
        # close_code as the server echoed it; anything else counts as not clean
        codes = Counter(str(s.close_code or s.error) for s in sockets if s not in unclosed)
        return {
            "sockets": len(sockets),
            "clean": clean,
            "aborted": len(unclosed),
            "codes": dict(codes),
            "seconds": time.monotonic() - started,
        }


def _rss_kib() -> int:
    with contextlib.suppress(OSError), open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _serve(conn: multiprocessing.connection.Connection, config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    fleet = Fleet(config)
    holding: asyncio.Task[None] | None = None

    def readable() -> None:
        try:
            commands.put_nowait(conn.recv())
        except EOFError:  # the coordinator is gone
            loop.remove_reader(conn.fileno())
            commands.put_nowait(("quit",))

    loop.add_reader(conn.fileno(), readable)
    while True:
        command = await commands.get()
        kind = command[0]
        if kind == "quit":
            if holding is not None:
                holding.cancel()
            return
        try:
            if kind == "connect":
                reply: Any = await fleet.connect(command[1])
            elif kind == "hold":
                holding = loop.create_task(fleet.hold(command[1], command[2]))
                reply = "holding"
            elif kind == "sample":
                reply = fleet.sample()
                if holding is not None and holding.done() and holding.exception():
                    reply["hold_error"] = repr(holding.exception())
            elif kind == "final":
                reply = fleet.final()
            elif kind == "close":
                if holding is not None:
                    holding.cancel()
                reply = await fleet.close(command[1])
            else:
                reply = {"error": f"unknown command {kind!r}"}
        except Exception as exc:  # noqa: BLE001 - the coordinator reports it
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        conn.send(reply)


def client_process(conn: multiprocessing.connection.Connection, config: dict[str, Any]) -> None:
    """A client process's body (module level, so ``spawn`` can import it)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(conn, config))
