"""transfer: large files moved reliably, over HTTP (tus 1.0, Range) and a TCP fast path.

Blueprints: ``transfer`` (pages and downloads, at ``/transfer``; defined in
:mod:`.views`) and ``transfer_api`` (the tus server, at ``/api/transfer``;
defined in :mod:`.tus`). Commands: ``transfer cleanup|push|pull`` and
``transfer-server``.

Unlike the other apps, this package's ``__init__`` creates no blueprint and
imports no Flask at import time: the transfer client (:mod:`.client`, also the
``flaskmono-transfer`` console script) lives in this package and must run where
Flask is not installed, and importing it imports this module first. So each
blueprint lives beside its views and :func:`init_app` imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    from flask import url_for

    from apps.transfer import cli, events, models, tus, views
    from project.migrations import register_migrations
    from project.shared_files import file_source
    from project.views import add_nav_item

    register_migrations(app, "transfer", Path(__file__).parent / "migrations")
    # Other apps (the chat) attach a user's files and link them, without importing this one.
    file_source(
        app,
        models.shared,
        events.download_path,  # built without a request: chat catch-up runs on a thread
        lambda: {"list": url_for("transfer.my_files"), "upload": url_for("transfer_api.create")},
    )
    app.register_blueprint(views.bp, url_prefix="/transfer")
    app.register_blueprint(tus.api_bp, url_prefix="/api/transfer")
    add_nav_item(app, "Files", "transfer.index")
    cli.init_cli(app)
