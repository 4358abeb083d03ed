"""The echo socket: the stack's own endpoint, for conformance suites and benchmarks."""

from __future__ import annotations

from flask import abort, current_app
from werkzeug.wrappers import Response

from project.extensions import db
from project.websocket import bp
from project.websocket.exceptions import ConnectionClosed
from project.websocket.server import WebSocket, serve


def _echo(ws: WebSocket) -> None:
    for message in ws:
        try:
            ws.send(message)
        except ConnectionClosed:
            return


@bp.get("/echo", websocket=True)
@bp.get("/echo")
def echo() -> Response:
    """Echo every message back: for conformance suites (off in production by default)."""
    if not current_app.config["WEBSOCKET_ECHO"]:
        abort(404)
    db.release()
    return serve(_echo)
