"""Who is logged in: the shared contract between the accounts app and everyone else.

The project does not know how users are stored. The accounts app registers
a loader with :func:`user_loader`; the request hook calls it with the id kept
in the session and puts the result in ``g.user``. Other apps only read
``g.user`` or use :func:`login_required`, so no app imports another's views.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, abort, current_app, g, redirect, request, session, url_for

SESSION_USER_KEY = "user_id"

F = TypeVar("F", bound=Callable[..., Any])


def user_loader(app: Flask, loader: Callable[[int], Any | None]) -> None:
    """Register the function that turns a session's user id into a user (or None)."""
    app.extensions["user_loader"] = loader


def load_user(app: Flask) -> Any | None:
    """The user whose id the session holds, if the id is valid and the user may log in."""
    user_id = session.get(SESSION_USER_KEY)
    loader = app.extensions.get("user_loader")
    if user_id is None or loader is None:
        return None
    if not isinstance(user_id, int):
        session.clear()  # not something we ever store: drop it
        return None
    return loader(user_id)


def login_required(view: F) -> F:
    """Send anonymous visitors to the login page (or 401 for an API path)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.get("user") is None:
            login_endpoint = "accounts.login"
            if request.path.startswith("/api/") or login_endpoint not in current_app.view_functions:
                abort(401)
            return redirect(url_for(login_endpoint, next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
