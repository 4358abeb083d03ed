"""The app factory: settings, extensions, installed apps, hooks, error pages.

``create_app`` does all one-time setup; nothing runs at import time, so each
test (and each gunicorn worker) gets an app built from its own settings.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from project.hosts import TrustedHostMiddleware
from project.settings import BASE_DIR, ConfigurationError, load_settings

__all__ = ["ConfigurationError", "create_app"]


def create_app(
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Flask:
    """Build the application for ``env`` (default: ``APP_ENV``, else development).

    Raises:
        ConfigurationError: a setting is missing or malformed (one-line message).
    """
    instance_path = Path((overrides or {}).get("INSTANCE_PATH") or BASE_DIR / "instance")
    config = load_settings(env, environ, overrides, instance_path)
    app = Flask(__name__, instance_path=str(instance_path), instance_relative_config=True)
    app.config.from_mapping(config)

    from project import csrf_tokens, errors, hooks, links, live, sessions, views, websocket
    from project.extensions import csrf, db, init_limiter, init_redis, server_session
    from project.redact import install_log_redaction

    install_log_redaction()  # reset and share tokens ride in URLs: keep them out of every log

    init_redis(app)
    db.init_app(app)
    sessions.init_sessions(app, server_session)
    csrf.init_app(app)
    csrf_tokens.init_csrf_tokens(app)
    init_limiter(app)
    # Outermost last: ProxyFix first sets the host a trusted proxy forwarded, then it is checked.
    app.wsgi_app = TrustedHostMiddleware(app.wsgi_app, app.config["TRUSTED_HOSTS"])  # type: ignore[method-assign]
    if app.config["TRUSTED_PROXIES"]:
        # Behind N reverse proxies: take the client address and scheme from their headers.
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    hooks.init_hooks(app)
    errors.init_errors(app)
    app.register_blueprint(views.bp)
    views.add_nav_item(app, "Home", "core.home")
    websocket.init_app(app)
    live.init_app(app)

    for dotted in app.config["INSTALLED_APPS"]:
        module = importlib.import_module(dotted)
        module.init_app(app)
    links.init_template_links(app)  # last: it checks no app added URL defaults
    return app
