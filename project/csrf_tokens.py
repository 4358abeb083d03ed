"""The page's CSRF token: Flask-WTF's, made once per request at a third of the cost.

Every page carries the token (the layout's ``<meta name="csrf-token">``, each
form's hidden field), so its making is paid on every page view. Flask-WTF's
``generate_csrf`` builds a new serializer on each call, and that serializer asks
zlib to compress the secret before signing it; a 40-character hex secret never
gets shorter, and the attempt alone is 13 µs. :func:`csrf_token` signs the same
secret (kept in the session, as Flask-WTF keeps it) with the same salt, key and
format minus the compression attempt, so Flask-WTF's ``validate_csrf`` reads
its tokens unchanged, and it caches the token in ``g`` under Flask-WTF's own
name, so either function returns the same token within a request.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, TypeVar

from flask import Flask, current_app, g, session
from flask_wtf.csrf import _FlaskFormCSRF
from itsdangerous import Serializer, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode

FLASK_WTF_SALT = "wtf-csrf-token"  # flask_wtf.csrf signs and checks with this salt
SerializerT = TypeVar("SerializerT", bound="Serializer[Any]")


class _Uncompressed:
    """The URL-safe payload without zlib's attempt: what the serializer sends for a short text."""

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))  # type: ignore[arg-type]


class PlainURLSafeSerializer(_Uncompressed, URLSafeSerializer):
    """``URLSafeSerializer`` for short values that never compress: the same output, faster."""


class PlainURLSafeTimedSerializer(_Uncompressed, URLSafeTimedSerializer):
    """``URLSafeTimedSerializer`` for short values that never compress."""


def app_serializer(
    app: Flask, cls: type[SerializerT], salt: str, key: str | bytes | None = None
) -> SerializerT:
    """The app's *cls* for *salt*, made once per key (``SECRET_KEY`` unless given).

    A serializer holds its key, so it is kept in ``app.extensions`` beside the
    key it was made with, and made again when the key changes (tests change it).
    """
    key = key or app.secret_key
    slot = f"serializer:{cls.__name__}:{salt}"
    kept = app.extensions.get(slot)
    if kept is None or kept[0] != key:
        kept = app.extensions[slot] = (key, cls(key, salt=salt))  # type: ignore[arg-type]
    serializer: SerializerT = kept[1]
    return serializer


def csrf_token() -> str:
    """This request's signed CSRF token; its secret is put in the session the first time."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    name = app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    token: str | None = g.get(name)
    if token is None:
        secret = session.get(name)
        if not isinstance(secret, str):
            secret = session[name] = hashlib.sha1(os.urandom(64)).hexdigest()  # noqa: S324 - as Flask-WTF
        key = app.config.get("WTF_CSRF_SECRET_KEY")
        token = app_serializer(app, PlainURLSafeTimedSerializer, FLASK_WTF_SALT, key).dumps(secret)
        setattr(g, name, token)
    return token


class FormCSRF(_FlaskFormCSRF):
    """Flask-WTF's form CSRF, whose field shows :func:`csrf_token`; checking is unchanged."""

    def generate_csrf_token(self, csrf_token_field: Any) -> str:
        return csrf_token()


def init_csrf_tokens(app: Flask) -> None:
    """Templates' ``csrf_token()`` becomes :func:`csrf_token` (after ``CSRFProtect.init_app``)."""
    app.jinja_env.globals["csrf_token"] = csrf_token
