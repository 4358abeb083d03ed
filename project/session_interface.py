"""What a session costs the store: nothing for a visitor, and a 503 (not a 500) on a bad day.

:class:`ProjectSessionInterface` stands in front of Flask-Session's interface
and decides two things it does not:

* **Anonymous visitors store nothing.** A page with a form needs a CSRF token,
  and Flask-WTF keeps the token's secret half in the session, so every
  cookieless visit to the login page used to store a session for 14 days (a
  crawler at 10 requests a second left gigabytes in Redis). A session that
  holds nothing but that token is not stored: the token travels in its own
  signed cookie (``csrf``) and is put back into the session when the next
  request brings it. This is the signed double-submit pattern; Flask-WTF's
  check is unchanged. The first time the session holds something of the
  user's (a login, a flashed message) it is stored as before and the cookie
  is dropped.
* **An outage of the store is answered, not raised.** Flask opens the session
  before any error handler can act and saves it after the last one ran, so a
  store that is down made every request a 500, home page and static files
  included. A session that cannot be read is an empty stand-in flagged
  ``unavailable``, never saved: pages open to anyone still work, and those
  that need a user answer 503 (:func:`project.auth.login_required`). A session
  that cannot be saved turns the response into the 503 page, since what it
  promised (a login, a saved form) did not stick.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Flask, Request, request, session
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.wrappers import Response

from project.csrf_tokens import PlainURLSafeSerializer, app_serializer
from project.errors import replace_with_outage
from project.outages import OUTAGES, log_outage

CSRF_COOKIE = "csrf"
_ANONYMOUS_KEYS = frozenset({"_permanent"})  # Flask-Session's own bookkeeping


class ProjectSessionInterface(SessionInterface):
    """Flask-Session's interface, with visitors kept out of the store and outages answered."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # regenerate, the store helpers, cookie settings

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        try:
            opened: Any = self.inner.open_session(app, request)
        except OUTAGES as exc:
            log_outage(exc, "reading a session")
            stand_in = self.inner.session_class(sid=self.inner._generate_sid(self.inner.sid_length))
            stand_in.unavailable = True
            return cast("SessionMixin", stand_in)
        opened.stored = bool(opened)  # the store only keeps sessions with something in them
        if not opened:
            token = _read_token(app, request)
            if token is not None:
                opened[_token_key(app)] = token
                opened.modified = False  # put back, not changed: nothing to save
        return cast("SessionMixin", opened)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if session_unavailable(session):
            return  # nothing was read, so nothing may be written (not even a cleared cookie)
        key = _token_key(app)
        try:
            if set(session) - _ANONYMOUS_KEYS <= {key}:
                self._save_anonymous(app, session, response, key)
                return
            self.inner.save_session(app, session, response)
        except OUTAGES as exc:
            log_outage(exc, "saving a session")
            replace_with_outage(response)
            return
        if CSRF_COOKIE in request.cookies:
            self._delete_token_cookie(app, response)  # the token lives in the stored session now

    def _save_anonymous(self, app: Flask, session: Any, response: Response, key: str) -> None:
        """A session holding a CSRF token at most: the token goes in its cookie, nothing stored."""
        if getattr(session, "stored", False):
            # It held more before (a logout, an expired login): the stored copy goes.
            self.inner._delete_session(self.inner._get_store_id(session.sid))
            response.delete_cookie(
                self.get_cookie_name(app),
                domain=self.get_cookie_domain(app),
                path=self.get_cookie_path(app),
            )
        if session.accessed:
            response.vary.add("Cookie")
        token = session.get(key)
        if token is None:
            if CSRF_COOKIE in request.cookies:
                self._delete_token_cookie(app, response)
            return
        if session.modified or CSRF_COOKIE not in request.cookies:
            response.set_cookie(
                CSRF_COOKIE,
                _serializer(app).dumps(token),
                httponly=True,
                secure=self.get_cookie_secure(app),
                samesite=self.get_cookie_samesite(app),
                path=self.get_cookie_path(app),
                domain=self.get_cookie_domain(app),
            )  # no expiry: it ends with the browser, and the form tokens expire on their own

    def _delete_token_cookie(self, app: Flask, response: Response) -> None:
        response.delete_cookie(
            CSRF_COOKIE, path=self.get_cookie_path(app), domain=self.get_cookie_domain(app)
        )


def session_unavailable(current: SessionMixin | None = None) -> bool:
    """Whether this request's session could not be read (its store is down)."""
    return bool(getattr(session if current is None else current, "unavailable", False))


def _token_key(app: Flask) -> str:
    return str(app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"))


def _serializer(app: Flask) -> URLSafeSerializer:
    """The token cookie's serializer; the token never compresses, so zlib is not tried."""
    return app_serializer(app, PlainURLSafeSerializer, "anonymous-csrf-cookie")


def _read_token(app: Flask, request: Request) -> str | None:
    """The CSRF secret from a visitor's cookie, if it carries our signature."""
    raw = request.cookies.get(CSRF_COOKIE)
    if not raw:
        return None
    try:
        token = _serializer(app).loads(raw)
    except BadSignature:
        return None
    return token if isinstance(token, str) else None
