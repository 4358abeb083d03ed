"""Room messages and presence across processes: in-process, or through Redis.

A message sent to a room must reach the room's sockets on every gunicorn
worker and every host. With ``REDIS_URL`` set, each process keeps one Redis
pub/sub subscription (a pattern over every room) on one listener thread and
fans each message out to its own sockets in that room. Without Redis (the
embedded stack: one ``runserver`` process) the fan-out is in-process.

Presence is a Redis sorted set per room whose members are ``connection|user``
and whose scores are expiry times. Each process refreshes its own members
every ``PRESENCE_TTL / 3`` seconds, so when a worker dies its users drop off
the online list within ``PRESENCE_TTL`` instead of staying "online" forever.

Presence frames are deltas (``joined``/``left``), and each process sends them
from one presence thread at most once per ``PRESENCE_INTERVAL`` per room, and
only when the set of online *users* changed: a join costs one frame per
socket in the room at most, however many join within the interval, and a
second socket of a user already online costs no frame at all. (Sending the
whole list to every socket on every join made filling a room of N sockets
cost N²/2 frames.) A join or leave that may change the set tells every
process through a small notice on the ``presence`` channel; each process
then reads the room's set once and sends its own sockets the difference from
what it last told them.

One :class:`Broker` does the fan-out and the presence deltas; what differs
between the stacks is behind two small objects it is given:

* a presence store, :class:`MemoryPresence` or :class:`RedisPresence`: who is
  online in a room, kept alive by heartbeats where entries expire;
* a transport, :class:`LocalTransport` or :class:`RedisTransport`: how a
  message and a presence notice reach every process.

:func:`get_broker` composes the pair that fits the app's settings.

Pub/sub is only the doorbell (DESIGN.md, reliability model): what it rings
for is stored first, and a process that may have missed rings (its
subscription dropped, or a publish failed) asks the app's :class:`Recovery`
for what its rooms missed once Redis is back, and delivers that. Presence is
re-added at once after a reconnect, so a Redis restarted empty shows everyone
again within a heartbeat.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import redis
from flask import Flask, current_app

from project.outages import OUTAGES, describe, log_outage
from project.websocket import PreparedText

log = logging.getLogger(__name__)

Callback = Callable[[PreparedText], None]  # one socket's share of a room's messages
Deliver = Callable[[str, str], None]  # (room, payload): a message for this process's sockets
Notice = Callable[[str], None]  # (room): its online set may have changed
Lost = Callable[[], None]  # notices may have been missed
Regained = Callable[[], None]  # subscribed again after a loss


class Presence(Protocol):
    """Who is online in each room, as every process sees it."""

    #: Seconds between two :meth:`refresh` calls, or None when entries never expire.
    heartbeat_interval: float | None

    def add(self, room: str, connection: str, username: str) -> None: ...

    def remove(self, room: str, connection: str, username: str) -> None: ...

    def online(self, room: str) -> list[str]: ...

    def refresh(self, members: Mapping[str, Mapping[str, str]]) -> None:
        """Keep this process's *members* (room -> connection -> user) alive."""


class Recovery(Protocol):
    """The app's record of what each room was sent, to find what a gap swallowed."""

    def seen(self, room: str, payload: str) -> None:
        """*payload* reached this process's sockets in *room*."""

    def missed(self, rooms: list[str], since: float) -> list[tuple[str, str]]:
        """(room, payload) pairs of *rooms* stored since about *since* and not yet seen.

        Raises an outage error when its store is down (tried again later).
        """


class Transport(Protocol):
    """How a room's messages and presence notices reach every process."""

    def start(self, deliver: Deliver, notice: Notice, lost: Lost, regained: Regained) -> None:
        """Call *deliver* and *notice* for what arrives, *lost* on a gap, *regained* after it.

        Called on every subscribe; only the first call starts anything.
        """

    def publish(self, room: str, payload: str) -> None: ...

    def announce(self, room: str) -> None:
        """Tell every other process that *room*'s online set may have changed."""

    def close(self) -> None: ...


class MemoryPresence:
    """Presence within one process (the embedded stack): nothing expires."""

    heartbeat_interval: float | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, dict[str, str]] = {}  # room -> connection -> user

    def add(self, room: str, connection: str, username: str) -> None:
        with self._lock:
            self._members.setdefault(room, {})[connection] = username

    def remove(self, room: str, connection: str, username: str) -> None:
        with self._lock:
            members = self._members.get(room, {})
            members.pop(connection, None)
            if not members:
                self._members.pop(room, None)

    def online(self, room: str) -> list[str]:
        with self._lock:
            return sorted(set(self._members.get(room, {}).values()))

    def refresh(self, members: Mapping[str, Mapping[str, str]]) -> None:
        """Nothing expires in-process."""


class RedisPresence:
    """Presence in one Redis sorted set per room; each entry expires ``ttl`` seconds on."""

    def __init__(self, client: redis.Redis, prefix: str, ttl: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.heartbeat_interval: float | None = max(ttl / 3, 0.5)

    def _key(self, room: str) -> str:
        return f"{self.prefix}presence:{room}"

    def add(self, room: str, connection: str, username: str) -> None:
        self.client.zadd(self._key(room), {f"{connection}|{username}": time.time() + self.ttl})

    def remove(self, room: str, connection: str, username: str) -> None:
        self.client.zrem(self._key(room), f"{connection}|{username}")

    def online(self, room: str) -> list[str]:
        key = self._key(room)
        pipe = self.client.pipeline()
        pipe.zremrangebyscore(key, "-inf", time.time())
        pipe.zrange(key, 0, -1)
        members = pipe.execute()[1]
        return sorted({m.decode().split("|", 1)[1] for m in members})

    def refresh(self, members: Mapping[str, Mapping[str, str]]) -> None:
        """Keep this process's members alive for another ``ttl``."""
        expiry = time.time() + self.ttl
        pipe = self.client.pipeline()
        for room, conns in members.items():
            pipe.zadd(self._key(room), {f"{c}|{u}": expiry for c, u in conns.items()})
        pipe.execute()


class LocalTransport:
    """In-process: a message goes straight to this process's sockets."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    def start(self, deliver: Deliver, notice: Notice, lost: Lost, regained: Regained) -> None:
        self._deliver = deliver

    def publish(self, room: str, payload: str) -> None:
        if self._deliver is not None:  # no subscriber yet: nobody to deliver to
            self._deliver(room, payload)

    def announce(self, room: str) -> None:
        """There is no other process to tell."""

    def close(self) -> None:
        """Nothing to stop."""


class RedisTransport:
    """Redis pub/sub: one pattern subscription over every room, on one listener thread."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self._channel_prefix = f"{prefix}chat:"
        self._presence_channel = f"{prefix}presence"
        # This process's own channel, published to only by ``close`` to end the listener's
        # wait for a message at once rather than at its next one-second poll.
        self._wake_channel = f"{prefix}broker-wake:{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()

    def start(self, deliver: Deliver, notice: Notice, lost: Lost, regained: Regained) -> None:
        """Start the listener on first use (after gunicorn's fork); wait until it listens."""
        with self._lock:
            if self._listener is None:
                self._listener = threading.Thread(
                    target=self._listen,
                    args=(deliver, notice, lost, regained),
                    name="broker-listener",
                    daemon=True,
                )
                self._listener.start()
        self._ready.wait(timeout=5)

    def publish(self, room: str, payload: str) -> None:
        self.client.publish(self._channel_prefix + room, payload)

    def announce(self, room: str) -> None:
        self.client.publish(self._presence_channel, room)

    def _listen(self, deliver: Deliver, notice: Notice, lost: Lost, regained: Regained) -> None:
        delay = 0.5
        gap = False
        while not self._stopped.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(self._channel_prefix + "*")
                pubsub.subscribe(self._presence_channel, self._wake_channel)
                self._ready.set()
                if gap:
                    log.warning("room broker has Redis again")
                    regained()  # from here on nothing is missed: look back over the gap
                    gap = False
                delay = 0.5
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if not message:
                        continue
                    if message["type"] == "pmessage":
                        room = message["channel"].decode()[len(self._channel_prefix) :]
                        deliver(room, message["data"].decode())
                    elif message["channel"] == self._wake_channel.encode():
                        continue  # close() wants the loop to look at _stopped now
                    elif message["type"] == "message":  # a presence notice: its data is the room
                        notice(message["data"].decode())
            except Exception as exc:  # noqa: BLE001 - this thread must outlive any one failure
                if self._stopped.is_set():
                    return
                if not gap:
                    log.warning("room broker lost Redis (%s); reconnecting", describe(exc))
                    lost()  # messages and notices may be missed from now on
                gap = True
                self._stopped.wait(delay)
                delay = min(delay * 2, 2.0)  # Redis back means chat back within seconds
            finally:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()

    def close(self) -> None:
        """Stop the listener thread."""
        self._stopped.set()
        if self._listener is not None:
            with contextlib.suppress(redis.RedisError):  # a listener without Redis is not waiting
                self.client.publish(self._wake_channel, b"")
            self._listener.join(timeout=5)


class Broker:
    """Fan-out to this process's sockets, and presence deltas, over a store and a transport.

    Args:
        presence: who is online, as every process sees it.
        transport: how messages and presence notices reach every process.
        presence_interval: seconds between two presence frames for one room, at least.
    """

    def __init__(
        self,
        presence: Presence,
        transport: Transport,
        presence_interval: float = 1.0,
        recovery: Recovery | None = None,
    ) -> None:
        self.presence = presence
        self.transport = transport
        self.presence_interval = presence_interval
        self.recovery = recovery
        # Wall-clock time since which messages may have been missed (None: nothing missed),
        # and whether the subscription is back so that looking for them can begin.
        self._missed_since: float | None = None
        self._resubscribed = False
        self._lock = threading.Lock()
        self._subscribers: dict[str, dict[int, Callback]] = {}
        self._members: dict[str, dict[str, str]] = defaultdict(dict)  # room -> conn -> user
        self._users: dict[str, Counter[str]] = defaultdict(Counter)  # room -> user -> sockets
        # room -> the online users this process's sockets in the room were last told of;
        # kept while the room has local sockets, the base of the next delta.
        self._shown: dict[str, frozenset[str]] = {}
        self._dirty: set[str] = set()  # rooms whose online set may have changed
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._presence_thread: threading.Thread | None = None
        self._rebuild = False  # re-add this process's presence on the next pass

    def _start(self) -> None:
        """Start the presence thread and the transport on first use (after gunicorn's fork)."""
        with self._lock:
            if self._presence_thread is None:
                self._presence_thread = threading.Thread(
                    target=self._run_presence, name="presence", daemon=True
                )
                self._presence_thread.start()
        self.transport.start(self._fan_out, self._mark_dirty, self._lost, self._regained)

    def subscribe(self, room: str, callback: Callback) -> Callable[[], None]:
        """Call *callback* with every message published to *room*; returns the unsubscriber."""
        self._start()
        token = id(callback)
        with self._lock:
            self._subscribers.setdefault(room, {})[token] = callback

        def unsubscribe() -> None:
            with self._lock:
                callbacks = self._subscribers.get(room, {})
                callbacks.pop(token, None)
                if not callbacks:
                    self._subscribers.pop(room, None)
                    self._shown.pop(room, None)  # nobody here to keep up to date

        return unsubscribe

    def publish(self, room: str, payload: str) -> None:
        """Ring the room's doorbell; when that fails, this process's sockets still hear it.

        What was published is stored already: the other processes find it when
        their subscription is back (see :class:`Recovery`).
        """
        try:
            self.transport.publish(room, payload)
        except OUTAGES as exc:
            log_outage(exc, f"announcing a message to {room}")
            self._fan_out(room, payload)
            with self._lock:
                self._missed_since = self._missed_since or time.time()

    def _fan_out(self, room: str, payload: str) -> None:
        with self._lock:
            callbacks = list(self._subscribers.get(room, {}).values())
        if self.recovery is not None and callbacks:
            self.recovery.seen(room, payload)
        self._deliver(callbacks, payload)

    # -- gaps ------------------------------------------------------------------------------------

    def _lost(self) -> None:
        """The subscription dropped: messages and presence notices may be missed from now."""
        with self._lock:
            self._missed_since = self._missed_since or time.time()
            self._resubscribed = False
        self._mark_all_dirty()

    def _regained(self) -> None:
        """Subscribed again: rebuild presence and look for what the gap swallowed, now."""
        with self._lock:
            self._resubscribed = True
            self._rebuild = True
        self._wake.set()

    def _recover(self) -> None:
        """Deliver what this process's rooms missed since the gap began (presence thread)."""
        with self._lock:
            since = self._missed_since
            if since is None or not self._resubscribed:
                return
            rooms = list(self._subscribers)
        if self.recovery is not None and rooms:
            try:
                missed = self.recovery.missed(rooms, since)
            except OUTAGES as exc:
                log_outage(exc, "catching rooms up after a gap")
                return  # tried again on the next heartbeat
            for room, payload in missed:
                self._fan_out(room, payload)
            if missed:
                log.warning("caught up %d messages missed during the gap", len(missed))
        with self._lock:
            if self._missed_since == since:
                self._missed_since = None

    @staticmethod
    def _deliver(callbacks: Iterable[Callback], payload: str) -> None:
        message = PreparedText(payload)  # encoded once for every socket that can share it
        for callback in callbacks:
            try:
                callback(message)
            except Exception:  # one broken socket must not stop the others
                log.exception("delivering to a room subscriber failed")

    # -- presence ------------------------------------------------------------------------------

    def join(self, room: str, connection: str, username: str) -> list[str]:
        """Count *connection* of *username* as online in *room*; returns the list for its welcome.

        The list is what this process's sockets in the room were last told, plus
        the user: with the presence frames that follow it, the socket's view is
        the others'. Subscribe before joining, so no presence frame is missed.
        """
        with self._lock:
            self._members[room][connection] = username
            users = self._users[room]
            users[username] += 1
            first = users[username] == 1
        try:
            self.presence.add(room, connection, username)
            if first:  # a second socket of an online user changes nobody's list
                self._changed(room)
            with self._lock:
                shown = self._shown.get(room)
            if shown is None:  # the room's first socket here: read the set once
                online = frozenset(self.online(room))
                with self._lock:
                    shown = self._shown.setdefault(room, online)
        except OUTAGES as exc:  # the heartbeat adds it once the store is back
            log_outage(exc, f"joining {room}")
            with self._lock:
                shown = self._shown.get(room) or frozenset(self._users.get(room, ()))
        return sorted(shown | {username})

    def leave(self, room: str, connection: str) -> None:
        with self._lock:
            members = self._members.get(room, {})
            username = members.pop(connection, None)
            if username is None:
                return
            users = self._users[room]
            users[username] -= 1
            last = users[username] <= 0
            if last:
                del users[username]
            if not members:
                self._members.pop(room, None)
                self._users.pop(room, None)
        try:
            self.presence.remove(room, connection, username)
            if last:
                self._changed(room)
        except OUTAGES as exc:  # the entry expires by itself (PRESENCE_TTL)
            log_outage(exc, f"leaving {room}")

    def online(self, room: str) -> list[str]:
        """The users online in *room* now (for the presence thread; sockets get deltas)."""
        return self.presence.online(room)

    def _changed(self, room: str) -> None:
        """The room's online set may have changed: tell every process that has its sockets."""
        self._mark_dirty(room)
        self.transport.announce(room)

    def _mark_dirty(self, room: str) -> None:
        with self._lock:
            if room not in self._subscribers:
                return
            self._dirty.add(room)
        self._wake.set()

    def _mark_all_dirty(self) -> None:
        """Look at every room on the next pass (presence may have changed unseen)."""
        with self._lock:
            self._dirty.update(self._subscribers)
        self._wake.set()

    def _run_presence(self) -> None:
        """Send presence deltas: at once after a quiet spell, then at most once per interval."""
        beat = self.presence.heartbeat_interval
        next_beat = None if beat is None else time.monotonic() + beat
        while not self._stopped.is_set():
            timeout = None if next_beat is None else max(0.0, next_beat - time.monotonic())
            self._wake.wait(timeout)
            if self._stopped.is_set():
                return
            with self._lock:
                rebuild, self._rebuild = self._rebuild, False
            if rebuild or (
                beat is not None and next_beat is not None and time.monotonic() >= next_beat
            ):
                next_beat = None if beat is None else time.monotonic() + beat
                self._heartbeat()
            self._wake.clear()  # before taking the rooms: a change from now on wakes us again
            self._recover()
            self._send_presence()
            self._stopped.wait(self.presence_interval)

    def _heartbeat(self) -> None:
        """Keep this process's presence alive; others' sockets may have expired meanwhile."""
        with self._lock:
            members = {room: dict(conns) for room, conns in self._members.items() if conns}
        try:
            self.presence.refresh(members)
        except OUTAGES as exc:
            log_outage(exc, "keeping presence alive")
        with self._lock:  # others' sockets may have expired: look at every room
            self._dirty.update(self._subscribers)

    def _send_presence(self) -> None:
        with self._lock:
            rooms = [room for room in self._dirty if room in self._subscribers]
            self._dirty.clear()
        for index, room in enumerate(rooms):
            try:
                online = frozenset(self.online(room))
            except OUTAGES as exc:
                log_outage(exc, "reading presence")
                with self._lock:  # try again on the next heartbeat
                    self._dirty.update(rooms[index:])
                return
            with self._lock:
                callbacks = self._subscribers.get(room)
                if not callbacks:
                    continue
                old = self._shown.get(room)
                self._shown[room] = online
                callbacks = dict(callbacks)
            if old is not None and old != online:
                self._deliver(callbacks.values(), presence_payload(online - old, old - online))

    def close(self) -> None:
        """Stop the presence thread and the transport (tests, and apps torn down in-process)."""
        self._stopped.set()
        self._wake.set()
        if self._presence_thread is not None:
            self._presence_thread.join(timeout=5)
        self.transport.close()


def presence_payload(joined: Iterable[str], left: Iterable[str]) -> str:
    return json.dumps({"type": "presence", "joined": sorted(joined), "left": sorted(left)})


_create_lock = threading.Lock()


def broker_recovery(app: Flask, recovery: Recovery) -> None:
    """Register the app's :class:`Recovery` (the app that stores what rooms are sent)."""
    app.extensions["broker_recovery"] = recovery


def get_broker(app: Flask | None = None) -> Broker:
    """This process's broker for the app (Redis when configured), created on first use."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    with _create_lock:
        return _broker(app)


def _broker(app: Flask) -> Broker:
    broker: Broker | None = app.extensions.get("broker")
    if broker is None:
        client: redis.Redis | None = app.extensions.get("redis")
        presence: Presence
        transport: Transport
        if client is not None:
            prefix = app.config["REDIS_KEY_PREFIX"]
            presence = RedisPresence(client, prefix, app.config["PRESENCE_TTL"])
            transport = RedisTransport(client, prefix)
        else:
            presence, transport = MemoryPresence(), LocalTransport()
        recovery = app.extensions.get("broker_recovery")
        broker = Broker(presence, transport, app.config["PRESENCE_INTERVAL"], recovery)
        app.extensions["broker"] = broker
    return broker
