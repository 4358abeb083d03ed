"""Request hooks: who is asking before the view, security headers after, cleanup at the end.

Flask's ``before_first_request`` is gone (Flask 2.3); one-time setup happens
in :func:`project.create_app`, never in a hook.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, g, request

from project.auth import load_request_user, unavailable
from project.extensions import csrf
from project.session_interface import session_unavailable

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",  # same-origin fetch and WebSocket
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


_SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)


def load_current_user() -> None:
    """Put the logged-in user (or None) in ``g.user`` for views and templates.

    Static files are the same for everyone: they skip the lookup, so they cost
    no query and keep loading while the database is down.
    """
    endpoint = request.endpoint or ""
    if endpoint == "static" or endpoint.endswith(".static"):
        g.user, g.auth_method, g.auth_unavailable = None, None, False
        return
    load_request_user()


def check_csrf() -> None:
    """CSRF on every state-changing request, except those authenticated by an API key.

    Flask-WTF's own check runs before any hook of ours, so it is switched off
    (``WTF_CSRF_CHECK_DEFAULT = False``) and called here, after the user is known.
    A request carrying an API key in its Authorization header cannot be forged
    by another site (a browser never adds that header on its own), so it needs no token.
    """
    config = current_app.config
    if not config["WTF_CSRF_ENABLED"] or request.method not in config["WTF_CSRF_METHODS"]:
        return
    if request.endpoint is None or g.get("auth_method") == "api_key":
        return
    if session_unavailable() or g.get("auth_unavailable"):
        # Who is asking, and so whether a token is even needed (an API key needs none),
        # cannot be known: the client retries, rather than being told its token is wrong.
        raise unavailable()
    csrf.protect()


def add_security_headers(response: Response) -> Response:
    """Add the headers every response carries.

    A view that set its own (a download's sandbox CSP) keeps it. The names a
    response already has are read once: ``Headers.setdefault`` scans them all
    for each header it adds.
    """
    headers = response.headers
    present = {name.lower() for name, _ in headers.items()}
    hsts = current_app.config["HSTS_SECONDS"]
    for name, value in _SECURITY_HEADERS + (
        (("Strict-Transport-Security", f"max-age={hsts}; includeSubDomains"),) if hsts else ()
    ):
        if name.lower() not in present:
            headers.add(name, value)
    return response


def init_hooks(app: Flask) -> None:
    app.before_request(load_current_user)
    app.before_request(check_csrf)
    app.after_request(add_security_headers)
    # The db connection is released by Database.release at app-context teardown,
    # which runs even when the view raised.
