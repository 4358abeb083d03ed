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
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, current_app

log = logging.getLogger(__name__)

Callback = Callable[[str], None]


class LocalBroker:
    """Fan-out and presence within one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, dict[int, Callback]] = defaultdict(dict)
        self._members: dict[str, dict[str, str]] = defaultdict(dict)  # room -> conn -> user
        self._last_online: dict[str, list[str]] = {}

    def subscribe(self, room: str, callback: Callback) -> Callable[[], None]:
        """Call *callback* with every payload published to *room*; returns the unsubscriber."""
        token = id(callback)
        with self._lock:
            self._subscribers[room][token] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers[room].pop(token, None)
                if not self._subscribers[room]:
                    del self._subscribers[room]

        return unsubscribe

    def publish(self, room: str, payload: str) -> None:
        self._fan_out(room, payload)

    def _fan_out(self, room: str, payload: str) -> None:
        with self._lock:
            callbacks = list(self._subscribers.get(room, {}).values())
        for callback in callbacks:
            try:
                callback(payload)
            except Exception:  # one broken socket must not stop the others
                log.exception("delivering to a room subscriber failed")

    # -- presence ------------------------------------------------------------------------------

    def join(self, room: str, connection: str, username: str) -> None:
        with self._lock:
            self._members[room][connection] = username
        self._presence_changed(room)

    def leave(self, room: str, connection: str) -> None:
        with self._lock:
            self._members[room].pop(connection, None)
        self._presence_changed(room)

    def online(self, room: str) -> list[str]:
        with self._lock:
            return sorted(set(self._members.get(room, {}).values()))

    def _presence_changed(self, room: str) -> None:
        self.publish(room, presence_payload(self.online(room)))

    def close(self) -> None:
        """Nothing to release in-process."""


class RedisBroker(LocalBroker):
    """Fan-out through Redis pub/sub; presence in Redis sorted sets that expire."""

    def __init__(self, client: redis.Redis, prefix: str, presence_ttl: int) -> None:
        super().__init__()
        self.client = client
        self.prefix = prefix
        self.presence_ttl = presence_ttl
        self._channel_prefix = f"{prefix}chat:"
        self._stopped = threading.Event()
        self._listener: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._ready = threading.Event()

    def _start(self) -> None:
        """Start the listener and heartbeat threads on first use (after gunicorn's fork)."""
        with self._lock:
            if self._listener is not None:
                return
            self._listener = threading.Thread(
                target=self._listen, name="broker-listener", daemon=True
            )
            self._heartbeat = threading.Thread(
                target=self._beat, name="presence-heartbeat", daemon=True
            )
            self._listener.start()
            self._heartbeat.start()
        self._ready.wait(timeout=5)

    def subscribe(self, room: str, callback: Callback) -> Callable[[], None]:
        self._start()
        return super().subscribe(room, callback)

    def publish(self, room: str, payload: str) -> None:
        self.client.publish(self._channel_prefix + room, payload)

    def _listen(self) -> None:
        delay = 0.5
        while not self._stopped.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(self._channel_prefix + "*")
                self._ready.set()
                delay = 0.5
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "pmessage":
                        room = message["channel"].decode()[len(self._channel_prefix) :]
                        self._fan_out(room, message["data"].decode())
            except Exception as exc:  # noqa: BLE001 - this thread must outlive any one failure
                if self._stopped.is_set():
                    return
                log.warning("room broker lost Redis (%s); reconnecting in %.1fs", exc, delay)
                self._stopped.wait(delay)
                delay = min(delay * 2, 10)
            finally:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()

    # -- presence ------------------------------------------------------------------------------

    def _presence_key(self, room: str) -> str:
        return f"{self.prefix}presence:{room}"

    def join(self, room: str, connection: str, username: str) -> None:
        with self._lock:
            self._members[room][connection] = username
        self.client.zadd(
            self._presence_key(room), {f"{connection}|{username}": time.time() + self.presence_ttl}
        )
        self._presence_changed(room)

    def leave(self, room: str, connection: str) -> None:
        with self._lock:
            username = self._members[room].pop(connection, None)
        if username is not None:
            self.client.zrem(self._presence_key(room), f"{connection}|{username}")
        self._presence_changed(room)

    def online(self, room: str) -> list[str]:
        key = self._presence_key(room)
        pipe = self.client.pipeline()
        pipe.zremrangebyscore(key, "-inf", time.time())
        pipe.zrange(key, 0, -1)
        members = pipe.execute()[1]
        return sorted({m.decode().split("|", 1)[1] for m in members})

    def _beat(self) -> None:
        """Keep this process's members alive; tell local sockets when others expire."""
        interval = max(self.presence_ttl / 3, 0.5)
        while not self._stopped.wait(interval):
            try:
                with self._lock:
                    members = {room: dict(conns) for room, conns in self._members.items() if conns}
                    rooms = list(self._subscribers)
                expiry = time.time() + self.presence_ttl
                pipe = self.client.pipeline()
                for room, conns in members.items():
                    pipe.zadd(
                        self._presence_key(room), {f"{c}|{u}": expiry for c, u in conns.items()}
                    )
                pipe.execute()
                for room in rooms:
                    online = self.online(room)
                    if self._last_online.get(room) != online:
                        self._last_online[room] = online
                        super()._fan_out(room, presence_payload(online))
            except redis.RedisError as exc:
                if not self._stopped.is_set():
                    log.warning("presence heartbeat failed: %s", exc)

    def close(self) -> None:
        """Stop the listener and heartbeat threads (tests, and apps torn down in-process)."""
        self._stopped.set()
        for thread in (self._listener, self._heartbeat):
            if thread is not None:
                thread.join(timeout=5)


def presence_payload(online: list[str]) -> str:
    return json.dumps({"type": "presence", "online": online})


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
        broker = (
            RedisBroker(client, app.config["REDIS_KEY_PREFIX"], app.config["PRESENCE_TTL"])
            if client is not None
            else LocalBroker()
        )
        app.extensions["broker"] = broker
    return broker
