"""The RFC 6455 WebSocket stack every app uses, and the conformance echo.

Modules: :mod:`~project.websocket.handshake` (the opening handshake),
:mod:`~project.websocket.protocol` (frames and closing, sans I/O),
:mod:`~project.websocket.deflate` (permessage-deflate) and
:mod:`~project.websocket.server` (one socket driven inside a Flask view, under
werkzeug, gunicorn threads or gevent); :mod:`~project.websocket.exceptions`
draws the one tree of its errors. An app's view answers an upgrade with
``return serve(handler)``.

Blueprint: ``websocket`` (at ``/ws``): ``/ws/echo``, on when ``WEBSOCKET_ECHO`` is.
"""

from __future__ import annotations

from flask import Blueprint, Flask

from project.websocket.exceptions import (
    ConnectionClosed,
    HandshakeError,
    ProtocolError,
    WebSocketError,
)
from project.websocket.protocol import CloseCode, PreparedText
from project.websocket.server import WebSocket, close_all, serve

__all__ = [
    "CloseCode",
    "ConnectionClosed",
    "HandshakeError",
    "PreparedText",
    "ProtocolError",
    "WebSocket",
    "WebSocketError",
    "close_all",
    "init_app",
    "serve",
]

bp = Blueprint("websocket", __name__)


def init_app(app: Flask) -> None:
    """Serve ``/ws/echo``, count each user's sockets, close them all with 1001 on stop."""
    from project.lifecycle import on_shutdown
    from project.websocket import views  # noqa: F401
    from project.websocket.slots import SocketSlots

    app.register_blueprint(bp, url_prefix="/ws")
    app.extensions["websocket_slots"] = SocketSlots(
        app.extensions.get("redis"),
        app.config["REDIS_KEY_PREFIX"],
        app.config["WEBSOCKET_MAX_PER_USER"],
        app.config["PRESENCE_TTL"],
    )
    on_shutdown(close_all)
