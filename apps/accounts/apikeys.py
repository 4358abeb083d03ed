"""API keys for non-browser clients (the transfer CLI, the TCP fast path, scripts).

A key looks like ``fmk_<key id>_<secret>``. The key id is public and finds the
row; the secret is shown once, at creation, and stored twice:

* ``secret_hash``: SHA-256 of the secret, compared in constant time when a
  client presents the whole key (HTTP ``Authorization: Bearer fmk_...``).
  The secret is 256 random bits, so a fast hash is enough: there is nothing
  to brute-force.
* ``secret_encrypted``: the secret under Fernet (AES-128-CBC + HMAC-SHA256)
  with a key derived from ``SECRET_KEY`` (:mod:`apps.accounts.keyring`). The TCP fast path's
  HMAC challenge needs the secret itself, which a hash cannot give back.
  After a ``SECRET_KEY`` rotation the encrypted copies cannot be read, so keys
  made before it stop working on the TCP fast path (HTTP still accepts them,
  by their hash): create new keys after rotating.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from apps.accounts import keyring
from apps.accounts.models import User, get_active_user
from project.db import utcnow
from project.extensions import db

PREFIX = "fmk"
KEY_PATTERN = re.compile(rf"^{PREFIX}_(?P<key_id>[0-9a-f]{{16}})_(?P<secret>[A-Za-z0-9_-]{{43}})$")


@dataclass(frozen=True)
class ApiKey:
    id: int
    user_id: int
    key_id: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ApiKey:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})

    @property
    def active(self) -> bool:
        return self.revoked_at is None


COLUMNS = "id, user_id, key_id, label, created_at, last_used_at, revoked_at"


def _fernet() -> Fernet:
    return keyring.fernet(b"flaskmono api-key encryption v1")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(user_id: int, label: str) -> tuple[ApiKey, str]:
    """Create a key; returns it and the full key string, which is never shown again."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    result = db.execute(
        "INSERT INTO api_keys (user_id, key_id, secret_hash, secret_encrypted, label, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (
            user_id,
            key_id,
            _digest(secret),
            _fernet().encrypt(secret.encode()).decode(),
            label.strip()[:100],
            utcnow(),
        ),
    )
    key = get_key(int(result.lastrowid or 0))
    assert key is not None
    return key, f"{PREFIX}_{key_id}_{secret}"


def get_key(key_pk: int) -> ApiKey | None:
    row = db.fetch_one(f"SELECT {COLUMNS} FROM api_keys WHERE id = %s", (key_pk,))
    return ApiKey.from_row(row) if row else None


def list_keys(user_id: int) -> list[ApiKey]:
    rows = db.fetch_all(
        f"SELECT {COLUMNS} FROM api_keys WHERE user_id = %s ORDER BY created_at DESC, id DESC",
        (user_id,),
    )
    return [ApiKey.from_row(r) for r in rows]


def revoke_key(key_pk: int, user_id: int | None = None) -> bool:
    """Revoke a key (only the owner's, when *user_id* is given); False if nothing changed."""
    sql = "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL"
    params: list[Any] = [utcnow(), key_pk]
    if user_id is not None:
        sql += " AND user_id = %s"
        params.append(user_id)
    return db.execute(sql, params).rowcount == 1


def revoke_all(user_id: int) -> int:
    return db.execute(
        "UPDATE api_keys SET revoked_at = %s WHERE user_id = %s AND revoked_at IS NULL",
        (utcnow(), user_id),
    ).rowcount


def mark_used(key_id: str) -> None:
    """Record that a key just proved itself (the TCP fast path's HMAC challenge)."""
    db.execute("UPDATE api_keys SET last_used_at = %s WHERE key_id = %s", (utcnow(), key_id))


def authenticate(presented: str) -> User | None:
    """The active owner of a valid, unrevoked key; None for anything else."""
    match = KEY_PATTERN.match(presented.strip())
    if not match:
        return None
    row = db.fetch_one(
        "SELECT id, user_id, secret_hash FROM api_keys WHERE key_id = %s AND revoked_at IS NULL",
        (match["key_id"],),
    )
    expected = row["secret_hash"] if row else _digest("no such key")
    if not hmac.compare_digest(expected, _digest(match["secret"])) or row is None:
        return None
    db.execute("UPDATE api_keys SET last_used_at = %s WHERE id = %s", (utcnow(), row["id"]))
    return get_active_user(int(row["user_id"]))


def secret_for(key_id: str) -> tuple[int, bytes] | None:
    """The owner and secret of a usable key, for HMAC challenges.

    None when the key is unknown or revoked, its owner is deactivated, or it was
    encrypted under another ``SECRET_KEY``.
    """
    row = db.fetch_one(
        "SELECT k.user_id, k.secret_encrypted FROM api_keys k JOIN users u ON u.id = k.user_id"
        " WHERE k.key_id = %s AND k.revoked_at IS NULL AND u.is_active = %s",
        (key_id, True),
    )
    if row is None:
        return None
    try:
        return int(row["user_id"]), _fernet().decrypt(row["secret_encrypted"].encode())
    except InvalidToken:  # SECRET_KEY changed since the key was made
        return None


def owner_and_secret(key_id: str) -> tuple[User, bytes] | None:
    """The active owner and the secret of a usable key (see :func:`secret_for`)."""
    found = secret_for(key_id)
    owner = get_active_user(found[0]) if found else None
    return (owner, found[1]) if found and owner else None
