"""Project-wide pages: the home page and the health check."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template

from project.health import run_checks

bp = Blueprint("core", __name__)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NavItem:
    label: str
    endpoint: str


def add_nav_item(app: Flask, label: str, endpoint: str) -> None:
    """Put a link in the main navigation; apps call this from their ``init_app``."""
    app.extensions.setdefault("nav_items", []).append(NavItem(label, endpoint))


@bp.app_template_filter("epoch")
def format_epoch(seconds: int) -> str:
    """A Unix time as people read it (UTC)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


@bp.app_context_processor
def navigation() -> dict[str, Any]:
    return {
        "nav_items": current_app.extensions.get("nav_items", []),
        # Someone registered a login page (see project.auth.login_view): show the account links.
        "accounts_enabled": "login_view" in current_app.extensions,
    }


@bp.get("/")
def home() -> str:
    """The landing page."""
    return render_template("home.html")


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Machine-readable health: 200 when every configured part works, 503 naming the failures.

    Anyone can ask, so the body says only which part is failing; what failed and
    where (host, port, the driver's error) goes to the log.
    """
    checks = run_checks(current_app._get_current_object())  # type: ignore[attr-defined]
    failing = [c.name for c in checks if not c.ok]
    for check in checks:
        if not check.ok:
            log.warning("health check: %s failing: %s", check.name, check.detail)
    body: dict[str, Any] = {c.name: c.public for c in checks}
    body["status"] = "unavailable" if failing else "ok"
    if failing:
        body["failing"] = failing
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, 503 if failing else 200
