"""accounts: users, and the loader that tells every other app who is logged in.

Registration, login and the admin pages build on this (see the accounts issue).
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from project.auth import user_loader
from project.migrations import register_migrations


def init_app(app: Flask) -> None:
    from apps.accounts.models import get_active_user

    register_migrations(app, "accounts", Path(__file__).parent / "migrations")
    user_loader(app, get_active_user)
