"""A second factor: TOTP codes (RFC 6238) from an authenticator app, and recovery codes.

Enrolment stores a new secret unconfirmed; the first right code confirms it,
and only then does sign-in ask for codes. A code is accepted one 30-second
step either side of now (clock drift), and never twice: the newest step a
code was accepted for is kept per user, and the row is moved past it by one
conditional UPDATE, so two requests racing with the same code cannot both
win. Recovery codes (``abcde-12345``) are kept as keyed hashes
(:mod:`apps.accounts.keyring`) and consumed the same way, by one UPDATE that
only an unused code matches.

The secret is encrypted with a key derived from ``SECRET_KEY``: after a
rotation it cannot be read, and ``manage.py twofactor reset`` is the way back.
"""

from __future__ import annotations

import hmac
import re
import secrets
import string
import time
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import pyotp
import segno
from cryptography.fernet import InvalidToken

from apps.accounts import keyring, models, user_sessions
from project.db import utcnow
from project.extensions import db

STEP_SECONDS = 30
DRIFT_STEPS = 1  # codes of the step before and after now are accepted too
RECOVERY_CODE_COUNT = 10
TOTP_CODE = re.compile(r"^[0-9]{6}\Z")
RECOVERY_CODE = re.compile(r"^([a-z]{5})-?([0-9]{5})\Z")
_SECRET_PURPOSE = b"flaskmono totp encryption v1"
_RECOVERY_PURPOSE = b"flaskmono recovery codes v1"


class Accepted(Enum):
    """Which kind of code let the user in (None from :func:`verify` means neither)."""

    TOTP = "totp"
    RECOVERY = "recovery"


@dataclass(frozen=True)
class SecondFactor:
    user_id: int
    created_at: datetime
    confirmed_at: datetime | None
    recovery_codes_left: int

    @property
    def enrolled(self) -> bool:
        return self.confirmed_at is not None


def _seal(secret: str) -> str:
    return keyring.fernet(_SECRET_PURPOSE).encrypt(secret.encode()).decode()


def _unseal(sealed: str) -> str | None:
    try:
        return keyring.fernet(_SECRET_PURPOSE).decrypt(sealed.encode()).decode()
    except InvalidToken:  # SECRET_KEY changed since enrolment: only a reset helps
        return None


def _row(user_id: int) -> dict[str, Any] | None:
    return db.fetch_one(
        "SELECT user_id, secret_encrypted, last_step, created_at, confirmed_at"
        " FROM two_factor WHERE user_id = %s",
        (user_id,),
    )


def get(user_id: int) -> SecondFactor | None:
    """The user's second factor, confirmed or waiting for its first code; None without one."""
    row = _row(user_id)
    if row is None:
        return None
    left = db.fetch_value(
        "SELECT COUNT(*) FROM recovery_codes WHERE user_id = %s AND used_at IS NULL", (user_id,)
    )
    return SecondFactor(user_id, row["created_at"], row["confirmed_at"], int(left or 0))


def is_enrolled(user_id: int) -> bool:
    return (
        db.fetch_value(
            "SELECT 1 FROM two_factor WHERE user_id = %s AND confirmed_at IS NOT NULL", (user_id,)
        )
        is not None
    )


def pending_secret(user_id: int) -> str:
    """The base32 secret of the user's unconfirmed enrolment, made now if there is none.

    The same secret is shown until it is confirmed, so reloading the page does not
    invalidate a QR code already scanned.
    """
    row = _row(user_id)
    if row is not None and row["confirmed_at"] is None:
        secret = _unseal(row["secret_encrypted"])
        if secret is not None:
            return secret
    secret = pyotp.random_base32()
    with db.transaction():
        db.execute("DELETE FROM two_factor WHERE user_id = %s AND confirmed_at IS NULL", (user_id,))
        db.execute(
            "INSERT INTO two_factor (user_id, secret_encrypted, last_step, created_at)"
            " VALUES (%s, %s, 0, %s)",
            (user_id, _seal(secret), utcnow()),
        )
    return secret


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_code_data_uri(uri: str) -> str:
    """The ``otpauth://`` URI as an SVG QR code, for an ``<img src>`` (no markup to escape)."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=5, border=2))


def _normalized(code: str) -> str:
    return "".join(code.split()).lower()


def _matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step, within the drift, whose code is *code*; compared in constant time."""
    totp = pyotp.TOTP(secret)
    current = int(now // STEP_SECONDS)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            found = step
    return found


def _accept_step(user_id: int, step: int, confirm: bool) -> bool:
    """Move the user's last accepted step to *step*; False if it is not newer (a replay).

    With *confirm*, the same UPDATE turns a pending enrolment on.
    """
    if confirm:
        result = db.execute(
            "UPDATE two_factor SET last_step = %s, confirmed_at = %s"
            " WHERE user_id = %s AND last_step < %s AND confirmed_at IS NULL",
            (step, utcnow(), user_id, step),
        )
    else:
        result = db.execute(
            "UPDATE two_factor SET last_step = %s"
            " WHERE user_id = %s AND last_step < %s AND confirmed_at IS NOT NULL",
            (step, user_id, step),
        )
    return result.rowcount == 1


def _check_totp(user_id: int, code: str, *, confirm: bool, now: float | None) -> bool:
    row = _row(user_id)
    if row is None or (row["confirmed_at"] is None) != confirm or not TOTP_CODE.match(code):
        return False
    secret = _unseal(row["secret_encrypted"])
    step = _matching_step(secret, code, time.time() if now is None else now) if secret else None
    return step is not None and _accept_step(user_id, step, confirm)


def confirm(user_id: int, code: str, *, now: float | None = None) -> list[str] | None:
    """Confirm a pending enrolment with its first code; returns the new recovery codes.

    None when the code is wrong (or there is nothing pending): nothing changes.
    """
    if not _check_totp(user_id, _normalized(code), confirm=True, now=now):
        return None
    return new_recovery_codes(user_id)


def verify(user_id: int, code: str, *, now: float | None = None) -> Accepted | None:
    """Check a sign-in code: a TOTP code not used before, or an unused recovery code.

    A code that is accepted is spent at once, whatever happens next.
    """
    code = _normalized(code)
    if _check_totp(user_id, code, confirm=False, now=now):
        return Accepted.TOTP
    match = RECOVERY_CODE.match(code)
    if match and _spend_recovery_code(user_id, "-".join(match.groups())):
        return Accepted.RECOVERY
    return None


def _recovery_digest(user_id: int, code: str) -> str:
    return keyring.keyed_digest(_RECOVERY_PURPOSE, f"{user_id}:{code}")


def _spend_recovery_code(user_id: int, code: str) -> bool:
    result = db.execute(
        "UPDATE recovery_codes SET used_at = %s"
        " WHERE user_id = %s AND code_hash = %s AND used_at IS NULL",
        (utcnow(), user_id, _recovery_digest(user_id, code)),
    )
    return result.rowcount == 1


def _recovery_code() -> str:
    letters = "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))
    digits = "".join(secrets.choice(string.digits) for _ in range(5))
    return f"{letters}-{digits}"


def new_recovery_codes(user_id: int) -> list[str]:
    """Ten fresh recovery codes in place of any earlier ones; shown once, stored hashed."""
    codes: list[str] = []
    while len(codes) < RECOVERY_CODE_COUNT:
        code = _recovery_code()
        if code not in codes:
            codes.append(code)
    with db.transaction():
        db.execute("DELETE FROM recovery_codes WHERE user_id = %s", (user_id,))
        db.execute_many(
            "INSERT INTO recovery_codes (user_id, code_hash) VALUES (%s, %s)",
            [(user_id, _recovery_digest(user_id, code)) for code in codes],
        )
    return codes


def remove(user_id: int) -> bool:
    """Remove the user's second factor and recovery codes; False if there was none."""
    with db.transaction():
        db.execute("DELETE FROM recovery_codes WHERE user_id = %s", (user_id,))
        return db.execute("DELETE FROM two_factor WHERE user_id = %s", (user_id,)).rowcount == 1


def reset(user_id: int, *, actor_id: int | None, ip: str) -> bool:
    """Remove a user's second factor for them (a lost device) and end their sessions.

    For the admin page and ``manage.py twofactor reset``; False if they had none.
    Their sessions end because each may have been opened with the lost device.
    """
    if not remove(user_id):
        return False
    user_sessions.end_all_sessions(user_id)
    models.audit("2fa.reset", actor_id=actor_id, target_user_id=user_id, ip=ip)
    return True
