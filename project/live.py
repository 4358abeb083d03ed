"""Each user's live channel: events raised anywhere reach every open page of that user.

An app raises an event with :func:`notify` (or :func:`progress` for a stream of
"so far" events that may be coalesced); every ``ws /ws/me`` socket of that
user, on any worker or host, gets it as one JSON text frame. The events and
their fields are the contract of DESIGN.md ("The personal channel"); this
module only carries them.

Events travel through the broker (:mod:`project.broker`) on one topic,
``#live``, that no chat room can be named (room names start with a letter or
digit). A payload is ``"<user id> <event JSON>"``: each process reads the id,
and hands the JSON as it is, encoded once, to that user's sockets it serves.
With ``REDIS_URL`` every process hears every event through Redis pub/sub.
Without it the broker is in-process: an event raised in another process (the
``transfer-server`` command beside ``runserver``) reaches no page; cross-process
live events need Redis.

Publishing never happens on the caller's thread: events go through a queue to
one publisher thread per process, so an upload's loop never waits for Redis
(nor fails when it is down: a live event is a courtesy, the database holds
the truth, and a page that reconnects reads it again). The queue keeps the
order of one process's events, so a file's last progress event comes before
its ``transfer.complete``.

:func:`progress` coalesces per key (an upload id): at most
``LIVE_PROGRESS_PER_SECOND`` events a second per key in this process; one
that comes sooner replaces any still waiting, and the newest is sent when
its turn comes (a trailing event), so the last offset is never lost.
:func:`notify` with ``ends=key`` drops what still waits for that key and
sends its own event at once, past the rate: the final word on an upload.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import threading
import time
import weakref
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, current_app

from project.auth import require_user
from project.broker import get_broker
from project.extensions import db
from project.outages import OUTAGES, log_outage
from project.revocation import revocable
from project.websocket import ConnectionClosed, PreparedText, WebSocket, serve

log = logging.getLogger(__name__)

TOPIC = "#live"  # a broker room; chat room names cannot start with '#'
#: Progress events per key per second at most (DESIGN.md: 4 per upload).
PROGRESS_PER_SECOND = 4.0
#: Seconds an idle publisher thread waits before it ends (a new event starts another).
IDLE_SECONDS = 5.0
#: Events waiting to be published, at most; past it new ones are dropped (and logged).
MAX_WAITING = 10_000

Event = Mapping[str, Any]

bp = Blueprint("live", __name__)


def init_app(app: Flask) -> None:
    """Serve ``ws /ws/me``."""
    app.register_blueprint(bp, url_prefix="/ws")


# -- raising events ------------------------------------------------------------------------------


def notify(user_id: int, event: Event, *, ends: str | None = None) -> None:
    """Send *event* to every open page of *user_id*, wherever it is served.

    With *ends*, progress of that key still waiting is dropped: *event* says
    the last word on it (the final offset, a completion, a failure).
    """
    _publisher().offer(user_id, event, key=ends, final=True)


def progress(user_id: int, key: str, event: Event) -> None:
    """Send a "so far" *event* about *key*, coalesced to a few a second (see the module doc)."""
    _publisher().offer(user_id, event, key=key, final=False)


def flush(timeout: float = 2.0) -> bool:
    """Wait until this app's events raised so far are published (short-lived commands)."""
    return _publisher().flush(timeout)


def _publisher(app: Flask | None = None) -> _Publisher:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    publisher: _Publisher | None = app.extensions.get("live")
    if publisher is None:
        publisher = app.extensions.setdefault("live", _Publisher(app))
    return publisher


@dataclass
class _Waiting:
    due: float  # monotonic time it may be sent
    user_id: int
    event: Event


class _Publisher:
    """One process's queue of events to publish, and the thread that publishes them."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.interval = 1.0 / PROGRESS_PER_SECOND
        self._cond = threading.Condition()
        self._queue: deque[tuple[int, Event]] = deque()
        self._waiting: dict[str, _Waiting] = {}  # key -> the newest progress held back
        self._last: dict[str, float] = {}  # key -> monotonic time of its last progress sent
        self._busy = False  # the thread holds events taken off the queue
        self._thread: threading.Thread | None = None
        self._pid = 0
        _publishers.add(self)

    def offer(self, user_id: int, event: Event, *, key: str | None, final: bool) -> None:
        now = time.monotonic()
        with self._cond:
            if key is not None and final:
                self._waiting.pop(key, None)
                self._last.pop(key, None)
            elif key is not None:
                last = self._last.get(key)
                held = self._waiting.get(key)
                if held is not None or (last is not None and now - last < self.interval):
                    due = held.due if held is not None else (last or now) + self.interval
                    self._waiting[key] = _Waiting(due, user_id, event)  # the newest replaces it
                    self._ensure_thread()
                    self._cond.notify()
                    return
                self._last[key] = now
            if len(self._queue) >= MAX_WAITING:
                log.warning("live events are not being published fast enough; dropped one")
                return
            self._queue.append((user_id, event))
            self._ensure_thread()
            self._cond.notify()

    def _ensure_thread(self) -> None:
        """Start the publisher thread if none runs in this process (caller holds the lock)."""
        if self._pid != os.getpid():  # a forked child inherits no running thread
            self._pid, self._thread, self._busy = os.getpid(), None, False
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="live-publisher", daemon=True)
            self._thread.start()

    def _take(self) -> list[tuple[int, Event]] | None:
        """The next events to publish, waiting for them; None when idle long enough to stop."""
        idle_until = time.monotonic() + IDLE_SECONDS
        with self._cond:
            self._busy = False
            self._cond.notify_all()  # flush() waits for an empty queue and an idle thread
            while True:
                now = time.monotonic()
                for key, waiting in sorted(self._waiting.items(), key=lambda kv: kv[1].due):
                    if waiting.due > now:
                        break
                    del self._waiting[key]
                    self._last[key] = now
                    self._queue.append((waiting.user_id, waiting.event))
                if self._queue:
                    taken = list(self._queue)
                    self._queue.clear()
                    self._busy = True
                    self._forget_quiet_keys(now)
                    return taken
                if not self._waiting and now >= idle_until:
                    self._thread = None
                    self._last.clear()  # nothing sent for IDLE_SECONDS: every key may send
                    return None
                next_due = min((w.due for w in self._waiting.values()), default=idle_until)
                self._cond.wait(max(0.0, min(next_due, idle_until) - now))

    def _forget_quiet_keys(self, now: float) -> None:
        """Drop send times past the interval: they no longer hold anything back."""
        if len(self._last) > 256:
            for key in [k for k, at in self._last.items() if now - at >= self.interval]:
                if key not in self._waiting:
                    del self._last[key]

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            for user_id, event in taken:
                self._publish(user_id, event)

    def _publish(self, user_id: int, event: Event) -> None:
        try:
            get_broker(self.app).publish(TOPIC, f"{user_id} {json.dumps(event)}")
        except OUTAGES as exc:  # Redis down: the page reads the truth when it reconnects
            log_outage(exc, "publishing a live event")
        except Exception:  # this thread must outlive any one event
            log.exception("publishing a live event failed")

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            for waiting in self._waiting.values():  # trailing events go now: we are leaving
                waiting.due = 0.0
            self._cond.notify_all()
            while self._queue or self._waiting or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or self._pid != os.getpid():
                    return False
                self._cond.wait(left)
        return True


_publishers: weakref.WeakSet[_Publisher] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """A command that raised events (``transfer cleanup``) sends them before it exits."""
    for publisher in list(_publishers):
        publisher.flush(2.0)


# -- the sockets ---------------------------------------------------------------------------------


class _Sockets:
    """This process's ``/ws/me`` sockets by user, fed by one subscription to the topic."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._by_user: dict[int, set[WebSocket]] = defaultdict(set)
        self._subscribed = False  # one subscription per process, for its lifetime

    def add(self, user_id: int, ws: WebSocket) -> Callable[[], None]:
        with self._lock:
            if not self._subscribed:
                get_broker(self.app).subscribe(TOPIC, self._deliver)
                self._subscribed = True
            self._by_user[user_id].add(ws)

        def remove() -> None:
            with self._lock:
                sockets = self._by_user.get(user_id)
                if sockets is not None:
                    sockets.discard(ws)
                    if not sockets:
                        del self._by_user[user_id]

        return remove

    def _deliver(self, message: PreparedText) -> None:
        head, _, body = message.text.partition(" ")
        try:
            user_id = int(head)
        except ValueError:
            log.warning("ignored a malformed live event: %.100r", message.text)
            return
        with self._lock:
            sockets = list(self._by_user.get(user_id, ()))
        if not sockets:
            return
        frame = PreparedText(body)  # encoded once for all of the user's sockets here
        for ws in sockets:
            with contextlib.suppress(ConnectionClosed):  # its reader notices and removes it
                ws.send(frame)


def _sockets() -> _Sockets:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    found: _Sockets | None = app.extensions.get("live_sockets")
    if found is None:
        found = app.extensions.setdefault("live_sockets", _Sockets(app))
    return found


def revoked_event(reason: str) -> str:
    """The last frame a socket of an ended session gets, before its 1008 close."""
    return json.dumps({"type": "session.revoked", "reason": reason})


def _run(ws: WebSocket, user_id: int) -> None:
    remove = _sockets().add(user_id, ws)
    try:
        for _ in ws:  # the channel is server to client: what a page sends is ignored
            pass
    finally:
        remove()


# werkzeug routes upgrade requests only to rules marked websocket=True; the plain
# rule lets other requests reach the handshake, which answers them with 426.
@bp.get("/me", websocket=True)
@bp.get("/me")
def me() -> Any:
    """The user's own live channel; only for logged-in users (401 before any upgrade otherwise)."""
    user = require_user()
    user_id = int(user.id)
    db.release()  # the socket may stay open for hours: hold no pooled connection meanwhile
    return serve(revocable(lambda ws: _run(ws, user_id), farewell=revoked_event), owner=user_id)
