"""Keys derived from ``SECRET_KEY``, one per purpose, for what the database must not hold in clear.

API keys' copies for the TCP challenge and TOTP secrets are encrypted (Fernet:
AES-128-CBC + HMAC-SHA256); recovery codes are hashed with a keyed HMAC, so a
copy of the database alone neither reads a secret nor tries the 10^12 codes
offline. Each purpose gets its own key through HKDF, so one can never open
another's data. After a ``SECRET_KEY`` rotation none of them can be read: API
keys then work over HTTP only, and second factors must be reset
(``manage.py twofactor reset``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app


def derived_key(purpose: bytes) -> bytes:
    """32 bytes for *purpose* (e.g. ``b"flaskmono totp encryption v1"``), from ``SECRET_KEY``."""
    secret_key = current_app.config["SECRET_KEY"].encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret_key)


def fernet(purpose: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(derived_key(purpose)))


def keyed_digest(purpose: bytes, message: str) -> str:
    """HMAC-SHA256 of *message* under *purpose*'s key, as 64 hex digits."""
    return hmac.new(derived_key(purpose), message.encode(), hashlib.sha256).hexdigest()
