"""transfer: large files moved reliably, over HTTP (tus 1.0, Range) and a TCP fast path.

Blueprints: ``transfer`` (pages and downloads, at ``/transfer``) and
``transfer_api`` (the tus server, at ``/api/transfer``). Commands:
``transfer cleanup|push|pull`` and ``transfer-server``.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask

bp = Blueprint("transfer", __name__, template_folder="templates", static_folder="static")
api_bp = Blueprint("transfer_api", __name__)


def init_app(app: Flask) -> None:
    from apps.transfer import cli, tus, views  # noqa: F401
    from project.migrations import register_migrations
    from project.views import add_nav_item

    register_migrations(app, "transfer", Path(__file__).parent / "migrations")
    app.register_blueprint(bp, url_prefix="/transfer")
    app.register_blueprint(api_bp, url_prefix="/api/transfer")
    add_nav_item(app, "Files", "transfer.index")
    cli.init_cli(app)
