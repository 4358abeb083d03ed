"""realtime: chat rooms that work across workers, over the project's WebSocket stack.

Blueprints: ``realtime`` (pages, at ``/realtime``) and ``ws`` (room sockets, at ``/ws``).
The sockets themselves (:mod:`project.websocket`) and the fan-out between
workers (:mod:`project.broker`) are project services.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask

bp = Blueprint("realtime", __name__, template_folder="templates", static_folder="static")
ws_bp = Blueprint("ws", __name__)


def init_app(app: Flask) -> None:
    from apps.realtime import models, views  # noqa: F401
    from apps.realtime.recovery import ChatRecovery
    from project.broker import broker_recovery
    from project.migrations import register_migrations
    from project.shared_files import on_delete, reader_check
    from project.views import add_nav_item

    register_migrations(app, "realtime", Path(__file__).parent / "migrations")
    app.register_blueprint(bp, url_prefix="/realtime")
    app.register_blueprint(ws_bp, url_prefix="/ws")
    add_nav_item(app, "Chat", "realtime.rooms")
    broker_recovery(app, ChatRecovery(app))
    # A file posted in a room is readable by its members while the message is there.
    reader_check(app, models.may_read_file)
    on_delete(app, models.file_removed)
