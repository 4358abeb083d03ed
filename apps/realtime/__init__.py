"""realtime: our own RFC 6455 WebSocket server, and chat rooms that work across workers.

Blueprints: ``realtime`` (pages, at ``/realtime``) and ``ws`` (sockets, at ``/ws``).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask

bp = Blueprint("realtime", __name__, template_folder="templates", static_folder="static")
ws_bp = Blueprint("ws", __name__)


def init_app(app: Flask) -> None:
    from apps.realtime import server, views  # noqa: F401
    from project.lifecycle import on_shutdown
    from project.migrations import register_migrations
    from project.views import add_nav_item

    register_migrations(app, "realtime", Path(__file__).parent / "migrations")
    app.register_blueprint(bp, url_prefix="/realtime")
    app.register_blueprint(ws_bp, url_prefix="/ws")
    add_nav_item(app, "Chat", "realtime.rooms")
    on_shutdown(server.close_all)
