"""accounts: users, login and sessions, profiles, API keys, and the admin pages.

Two blueprints: ``accounts`` (mounted at ``/accounts``) for everyone, and
``admin`` (mounted at ``/admin``) for administrators.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask

bp = Blueprint("accounts", __name__, template_folder="templates")
admin_bp = Blueprint("admin", __name__, template_folder="templates")


def init_app(app: Flask) -> None:
    from apps.accounts import (  # noqa: F401
        admin,
        apikeys,
        cli,
        models,
        twofactor_views,
        user_sessions,
        views,
    )
    from project.auth import (
        api_key_loader,
        key_secret_loader,
        login_view,
        session_validator,
        user_loader,
    )
    from project.migrations import register_migrations

    register_migrations(app, "accounts", Path(__file__).parent / "migrations")
    user_loader(app, models.get_active_user)
    api_key_loader(app, apikeys.authenticate)
    key_secret_loader(app, apikeys.owner_and_secret, apikeys.mark_used)
    session_validator(app, user_sessions.validate_current)
    login_view(app, "accounts.login")
    app.register_blueprint(bp, url_prefix="/accounts")
    app.register_blueprint(admin_bp, url_prefix="/admin")
    cli.init_cli(app)
