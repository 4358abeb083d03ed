"""Ending a session reaches the sockets it opened, on every worker and host.

A socket is authenticated once, at its handshake, by the session cookie; it
may then stay open for hours. When that session ends elsewhere (a logout in
another tab, a password change, an admin ending it, the cap on sessions per
user), the socket must not go on acting for the user. So ending a session
publishes a revocation through the broker, on a topic no chat room can be
named, and each process closes its own sockets of that session with 1008.

Only a hash of the session id travels, so the pub/sub channel never carries
something that opens a session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, current_app, session

from project.broker import get_broker
from project.websocket import CloseCode, ConnectionClosed, PreparedText, WebSocket

log = logging.getLogger(__name__)

TOPIC = "#sessions"  # a broker room; chat room names cannot start with '#'


def session_handle(sid: str) -> str:
    """A session's public name: what pages show and what a revocation carries.

    A session id itself never leaves the server; its handle cannot open it.
    """
    return hashlib.sha256(sid.encode()).hexdigest()[:32]


def revoke_session(sid: str, reason: str = "session ended") -> None:
    """Close every open socket of the session *sid*, wherever it is served."""
    try:
        get_broker().publish(TOPIC, json.dumps({"session": session_handle(sid), "reason": reason}))
    except redis.RedisError as exc:  # the session itself is gone; its sockets close on their own
        log.warning("could not announce an ended session: %s", exc)


#: Turns the reason a session ended into the last text frame its socket gets.
Farewell = Callable[[str], str]


def revocable(
    handler: Callable[[WebSocket], None], farewell: Farewell | None = None
) -> Callable[[WebSocket], None]:
    """*handler* for a socket of this request's session: closed (1008) when it ends.

    With *farewell*, the socket is first sent ``farewell(reason)``, so a page
    can say why rather than guess from the close code (``ws /ws/me`` does).
    Call in the view, where the session is known; pass the result to ``serve``.
    """
    sid: str = session.sid  # type: ignore[attr-defined]  # Flask-Session's id

    def run(ws: WebSocket) -> None:
        stop = watch(ws, sid, farewell)
        try:
            handler(ws)
        finally:
            stop()

    return run


class _Watch:
    """This process's open sockets by session, and one subscription to the topic."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._lock = threading.Lock()
        # session handle -> its sockets here, each with its farewell (or None)
        self._sockets: dict[str, dict[WebSocket, Farewell | None]] = defaultdict(dict)
        self._subscribed = False  # one subscription per process, for its lifetime

    def add(self, ws: WebSocket, sid: str, farewell: Farewell | None) -> Callable[[], None]:
        tag = session_handle(sid)
        with self._lock:
            if not self._subscribed:
                get_broker(self.app).subscribe(TOPIC, self._revoked)
                self._subscribed = True
            self._sockets[tag][ws] = farewell

        def remove() -> None:
            with self._lock:
                sockets = self._sockets.get(tag)
                if sockets is not None:
                    sockets.pop(ws, None)
                    if not sockets:
                        del self._sockets[tag]

        return remove

    def _revoked(self, message: PreparedText) -> None:
        try:
            event: dict[str, Any] = json.loads(message.text)
            tag, reason = str(event["session"]), str(event.get("reason", "session ended"))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed revocation: %.100r", message.text)
            return
        with self._lock:
            sockets = list(self._sockets.get(tag, {}).items())
        for ws, farewell in sockets:
            if farewell is not None:
                with contextlib.suppress(ConnectionClosed):  # closing anyway
                    ws.send(farewell(reason))
            ws.close(CloseCode.POLICY_VIOLATION, reason)


def watch(ws: WebSocket, sid: str, farewell: Farewell | None = None) -> Callable[[], None]:
    """Close *ws* when session *sid* is revoked (after *farewell*, if given).

    Returns the function that stops watching.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    watcher: _Watch | None = app.extensions.get("revocation")
    if watcher is None:
        watcher = app.extensions.setdefault("revocation", _Watch(app))
    return watcher.add(ws, sid, farewell)
