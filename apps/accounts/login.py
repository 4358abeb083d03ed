"""Logging in and out: one place that starts and ends a user's session."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import g, request

from apps.accounts import models, user_sessions
from project.auth import end_session, start_session


def client_ip() -> str:
    return request.remote_addr or ""


def log_in(user: models.User, *, remember: bool) -> None:
    """Start a fresh session for *user* (new id, new CSRF token) and index it."""
    start_session(user.id, remember=remember)
    user_sessions.remember_current(user.id)
    models.record_login(user.id)


def log_out() -> None:
    if g.get("user") is not None and g.get("auth_method") == "session":
        user_sessions.forget_current(g.user.id)
    end_session()
    g.user = None


def is_safe_next(target: str | None) -> bool:
    """Only same-site paths: no scheme, no host, no protocol-relative or backslash tricks."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return False
    if any(ch in target for ch in "\\\r\n\t") or any(ord(ch) < 32 for ch in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc
