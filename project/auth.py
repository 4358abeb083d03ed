"""Who is asking: the shared contract between the accounts app and everyone else.

The project does not know how users are stored. The accounts app registers a
loader for session logins (:func:`user_loader`) and one for API keys
(:func:`api_key_loader`); the request hook puts the result in ``g.user`` and
says how it was obtained in ``g.auth_method`` (``"session"``, ``"api_key"`` or
``None``). Other apps only read ``g.user`` or use :func:`login_required`, so no
app imports another's views.

Session logins carry their own clock: ``auth_at`` (when the password was
given) and ``seen_at`` (the last request). A session older than its absolute
lifetime, or idle longer than its idle lifetime, is cleared on its next
request. "Remember me" stretches both to ``SESSION_LIFETIME_SECONDS``.

When the session store or the database is down, who is asking cannot be
known: ``g.user`` is None and ``g.auth_unavailable`` is set, so pages open to
anyone still work while :func:`login_required` answers 503, not a login
redirect that would tell a logged-in user they were logged out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, abort, current_app, g, redirect, request, session, url_for
from werkzeug.exceptions import ServiceUnavailable

from project.outages import OUTAGES, RETRY_AFTER, log_outage
from project.revocation import revoke_session
from project.session_interface import session_unavailable

SESSION_USER_KEY = "user_id"
SEEN_RESOLUTION = 60  # seconds: refresh seen_at at most this often (each refresh is a write)

F = TypeVar("F", bound=Callable[..., Any])


def user_loader(app: Flask, loader: Callable[[int], Any | None]) -> None:
    """Register the function that turns a session's user id into a user (or None)."""
    app.extensions["user_loader"] = loader


def api_key_loader(app: Flask, loader: Callable[[str], Any | None]) -> None:
    """Register the function that turns a presented API key into a user (or None)."""
    app.extensions["api_key_loader"] = loader


def key_secret_loader(
    app: Flask,
    loader: Callable[[str], tuple[Any, bytes] | None],
    mark_used: Callable[[str], None],
) -> None:
    """Register how an API key's secret is found by its key id, for HMAC challenges.

    *loader* returns (the key's active owner, the secret) or None for an unknown,
    revoked or unusable key; *mark_used* records that a key just proved itself.
    """
    app.extensions["key_secret_loader"] = (loader, mark_used)


def key_secret(key_id: str) -> tuple[Any, bytes] | None:
    """The owner and secret of a usable key (None too when no loader is registered)."""
    registered = current_app.extensions.get("key_secret_loader")
    return registered[0](key_id) if registered else None


def mark_key_used(key_id: str) -> None:
    registered = current_app.extensions.get("key_secret_loader")
    if registered:
        registered[1](key_id)


def session_validator(app: Flask, validator: Callable[[int], bool]) -> None:
    """Register a check that a logged-in session is still valid (not ended elsewhere)."""
    app.extensions["session_validator"] = validator


def start_session(user_id: int, *, remember: bool) -> None:
    """Log a user in on this session: a new id and CSRF token first, so none can be fixed."""
    if session:
        current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
    session.clear()  # drops the old CSRF token too; a new one is made on the next form
    now = int(time.time())
    session[SESSION_USER_KEY] = user_id
    session["auth_at"] = now
    session["seen_at"] = now
    session["remember"] = remember
    session.permanent = remember  # otherwise the cookie ends with the browser


def end_session() -> None:
    """Log out: the stored session is deleted now, and this browser gets a new, empty one.

    Sockets the session opened (other tabs) are closed too.
    """
    if session:
        revoke_session(session.sid)  # type: ignore[attr-defined]
        current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
    session.clear()


def _lifetimes(remember: bool) -> tuple[int, int]:
    config = current_app.config
    if remember:
        return config["SESSION_LIFETIME_SECONDS"], config["SESSION_LIFETIME_SECONDS"]
    return config["SESSION_ABSOLUTE_SECONDS"], config["SESSION_IDLE_SECONDS"]


def _session_user() -> Any | None:
    user_id = session.get(SESSION_USER_KEY)
    loader = current_app.extensions.get("user_loader")
    if user_id is None or loader is None:
        return None
    auth_at, seen_at = session.get("auth_at"), session.get("seen_at")
    if not isinstance(user_id, int) or not isinstance(auth_at, int) or not isinstance(seen_at, int):
        session.clear()  # not something we ever store: drop it
        return None
    absolute, idle = _lifetimes(bool(session.get("remember")))
    now = int(time.time())
    if now - auth_at > absolute or now - seen_at > idle:
        session.clear()
        return None
    user = loader(user_id)
    validator = current_app.extensions.get("session_validator")
    if user is None or (validator is not None and not validator(user_id)):
        session.clear()  # deleted, deactivated, or this session was ended elsewhere
        return None
    if now - seen_at >= SEEN_RESOLUTION:
        session["seen_at"] = now
    return user


def _api_key_user() -> Any | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    loader = current_app.extensions.get("api_key_loader")
    if scheme.lower() != "bearer" or not credentials or loader is None:
        return None
    user = loader(credentials)
    if user is None:
        abort(401)  # a key was presented and is wrong: say so rather than fall back
    return user


def load_request_user() -> None:
    """Set ``g.user``, ``g.auth_method`` and ``g.auth_unavailable`` for this request."""
    g.user, g.auth_method, g.auth_unavailable = None, None, False
    try:
        if "Authorization" in request.headers:
            g.user = _api_key_user()
            g.auth_method = "api_key" if g.user else None
            if g.user is not None:
                return
        if session_unavailable():
            g.auth_unavailable = True
            return
        g.user = _session_user()
        g.auth_method = "session" if g.user else None
    except OUTAGES as exc:
        log_outage(exc, "loading the user")
        g.user, g.auth_method, g.auth_unavailable = None, None, True


def unavailable() -> ServiceUnavailable:
    """The 503 for a request that needs a service that is down (raise it)."""
    return ServiceUnavailable(retry_after=RETRY_AFTER)


def require_user() -> Any:
    """The logged-in user, or abort: 503 when that cannot be known now, else 401."""
    if g.get("user") is None:
        if g.get("auth_unavailable"):
            raise unavailable()
        abort(401)
    return g.user


def login_view(app: Flask, endpoint: str) -> None:
    """Register the login page's endpoint: :func:`login_required` sends visitors there.

    The app that owns logins calls this; the project never names another app's views.
    """
    app.extensions["login_view"] = endpoint


def login_required(view: F) -> F:
    """Send anonymous visitors to the login page (or 401 for an API path, or with none)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.get("user") is None:
            if g.get("auth_unavailable"):
                raise unavailable()
            endpoint = current_app.extensions.get("login_view")
            if endpoint is None or request.path.startswith("/api/"):
                abort(401)
            return redirect(url_for(endpoint, next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def admin_required(view: F) -> F:
    """Admins only: anonymous visitors go to the login page, everyone else gets 403."""

    @wraps(view)
    @login_required
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not getattr(g.user, "is_admin", False):
            abort(403)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
