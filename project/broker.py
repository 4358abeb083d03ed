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
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import redis
from flask import Flask, current_app

from project.websocket.protocol import PreparedText

log = logging.getLogger(__name__)

Callback = Callable[[PreparedText], None]


class LocalBroker:
    """Fan-out and presence within one process.

    Args:
        presence_interval: seconds between two presence frames for one room, at least.
    """

    def __init__(self, presence_interval: float = 1.0) -> None:
        self.presence_interval = presence_interval
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
        self._presence: threading.Thread | None = None

    def _start(self) -> None:
        """Start the presence thread on first use (after gunicorn's fork)."""
        with self._lock:
            if self._presence is not None:
                return
            self._presence = threading.Thread(
                target=self._run_presence, name="presence", daemon=True
            )
            self._presence.start()

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
        self._fan_out(room, payload)

    def _fan_out(self, room: str, payload: str) -> None:
        with self._lock:
            callbacks = list(self._subscribers.get(room, {}).values())
        self._deliver(callbacks, payload)

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
        self._store_join(room, connection, username)
        if first:  # a second socket of an online user changes nobody's list
            self._changed(room)
        with self._lock:
            shown = self._shown.get(room)
        if shown is None:  # the room's first socket here: read the set once
            online = frozenset(self.online(room))
            with self._lock:
                shown = self._shown.setdefault(room, online)
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
        self._store_leave(room, connection, username)
        if last:
            self._changed(room)

    def online(self, room: str) -> list[str]:
        """The users online in *room* now (for the presence thread; sockets get deltas)."""
        with self._lock:
            return sorted(self._users.get(room, {}))

    def _store_join(self, room: str, connection: str, username: str) -> None:
        """Nothing to store beyond the members in-process."""

    def _store_leave(self, room: str, connection: str, username: str) -> None:
        """Nothing to store beyond the members in-process."""

    def _changed(self, room: str) -> None:
        """The room's online set may have changed: tell every process that has its sockets."""
        self._mark_dirty(room)

    def _mark_dirty(self, room: str) -> None:
        with self._lock:
            if room not in self._subscribers:
                return
            self._dirty.add(room)
        self._wake.set()

    def _beat_interval(self) -> float | None:
        """Seconds between heartbeats, or None (in-process presence never expires)."""
        return None

    def _heartbeat(self) -> None:
        """Keep this process's presence alive (Redis only)."""

    def _run_presence(self) -> None:
        """Send presence deltas: at once after a quiet spell, then at most once per interval."""
        beat = self._beat_interval()
        next_beat = None if beat is None else time.monotonic() + beat
        while not self._stopped.is_set():
            timeout = None if next_beat is None else max(0.0, next_beat - time.monotonic())
            self._wake.wait(timeout)
            if self._stopped.is_set():
                return
            if beat is not None and next_beat is not None and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat
                try:
                    self._heartbeat()
                except redis.RedisError as exc:
                    log.warning("presence heartbeat failed: %s", exc)
                with self._lock:  # others' sockets may have expired: look at every room
                    self._dirty.update(self._subscribers)
            self._wake.clear()  # before taking the rooms: a change from now on wakes us again
            self._send_presence()
            self._stopped.wait(self.presence_interval)

    def _send_presence(self) -> None:
        with self._lock:
            rooms = [room for room in self._dirty if room in self._subscribers]
            self._dirty.clear()
        for index, room in enumerate(rooms):
            try:
                online = frozenset(self.online(room))
            except redis.RedisError as exc:
                log.warning("presence update failed: %s", exc)
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
        """Stop the presence thread (tests, and apps torn down in-process)."""
        self._stopped.set()
        self._wake.set()
        if self._presence is not None:
            self._presence.join(timeout=5)


class RedisBroker(LocalBroker):
    """Fan-out through Redis pub/sub; presence in Redis sorted sets that expire."""

    def __init__(
        self, client: redis.Redis, prefix: str, presence_ttl: int, presence_interval: float = 1.0
    ) -> None:
        super().__init__(presence_interval)
        self.client = client
        self.prefix = prefix
        self.presence_ttl = presence_ttl
        self._channel_prefix = f"{prefix}chat:"
        self._presence_channel = f"{prefix}presence"
        self._listener: threading.Thread | None = None
        self._ready = threading.Event()

    def _start(self) -> None:
        """Start the listener and presence threads on first use (after gunicorn's fork)."""
        super()._start()
        with self._lock:
            if self._listener is not None:
                return
            self._listener = threading.Thread(
                target=self._listen, name="broker-listener", daemon=True
            )
            self._listener.start()
        self._ready.wait(timeout=5)

    def publish(self, room: str, payload: str) -> None:
        self.client.publish(self._channel_prefix + room, payload)

    def _listen(self) -> None:
        delay = 0.5
        while not self._stopped.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(self._channel_prefix + "*")
                pubsub.subscribe(self._presence_channel)
                self._ready.set()
                delay = 0.5
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if not message:
                        continue
                    if message["type"] == "pmessage":
                        room = message["channel"].decode()[len(self._channel_prefix) :]
                        self._fan_out(room, message["data"].decode())
                    elif message["type"] == "message":  # a presence notice: its data is the room
                        self._mark_dirty(message["data"].decode())
            except Exception as exc:  # noqa: BLE001 - this thread must outlive any one failure
                if self._stopped.is_set():
                    return
                log.warning("room broker lost Redis (%s); reconnecting in %.1fs", exc, delay)
                with self._lock:  # notices may have been missed meanwhile
                    self._dirty.update(self._subscribers)
                self._wake.set()
                self._stopped.wait(delay)
                delay = min(delay * 2, 10)
            finally:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()

    # -- presence ------------------------------------------------------------------------------

    def _presence_key(self, room: str) -> str:
        return f"{self.prefix}presence:{room}"

    def _store_join(self, room: str, connection: str, username: str) -> None:
        self.client.zadd(
            self._presence_key(room), {f"{connection}|{username}": time.time() + self.presence_ttl}
        )

    def _store_leave(self, room: str, connection: str, username: str) -> None:
        self.client.zrem(self._presence_key(room), f"{connection}|{username}")

    def _changed(self, room: str) -> None:
        self._mark_dirty(room)
        self.client.publish(self._presence_channel, room)

    def online(self, room: str) -> list[str]:
        key = self._presence_key(room)
        pipe = self.client.pipeline()
        pipe.zremrangebyscore(key, "-inf", time.time())
        pipe.zrange(key, 0, -1)
        members = pipe.execute()[1]
        return sorted({m.decode().split("|", 1)[1] for m in members})

    def _beat_interval(self) -> float | None:
        return max(self.presence_ttl / 3, 0.5)

    def _heartbeat(self) -> None:
        """Keep this process's members alive for another ``PRESENCE_TTL``."""
        with self._lock:
            members = {room: dict(conns) for room, conns in self._members.items() if conns}
        expiry = time.time() + self.presence_ttl
        pipe = self.client.pipeline()
        for room, conns in members.items():
            pipe.zadd(self._presence_key(room), {f"{c}|{u}": expiry for c, u in conns.items()})
        pipe.execute()

    def close(self) -> None:
        """Stop the listener and presence threads (tests, and apps torn down in-process)."""
        super().close()
        if self._listener is not None:
            self._listener.join(timeout=5)


def presence_payload(joined: Iterable[str], left: Iterable[str]) -> str:
    return json.dumps({"type": "presence", "joined": sorted(joined), "left": sorted(left)})


_create_lock = threading.Lock()


def get_broker(app: Flask | None = None) -> LocalBroker:
    """This process's broker for the app (Redis when configured), created on first use."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    with _create_lock:
        return _broker(app)


def _broker(app: Flask) -> LocalBroker:
    broker: Any = app.extensions.get("broker")
    if broker is None:
        client = app.extensions.get("redis")
        interval = app.config["PRESENCE_INTERVAL"]
        broker = (
            RedisBroker(
                client, app.config["REDIS_KEY_PREFIX"], app.config["PRESENCE_TTL"], interval
            )
            if client is not None
            else LocalBroker(interval)
        )
        app.extensions["broker"] = broker
    return broker
