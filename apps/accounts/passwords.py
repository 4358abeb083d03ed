"""Password hashing (argon2id) and the rules a new password must meet.

The argon2 cost comes from settings (``ARGON2_TIME_COST``, ``ARGON2_MEMORY_KIB``,
``ARGON2_PARALLELISM``; the defaults are argon2-cffi's recommendation). Hashes
carry their parameters, so when the settings change, :func:`needs_rehash` says
so at the next login and the login view stores a fresh hash: nobody has to
reset a password for hashes to improve.
"""

from __future__ import annotations

import gzip
import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

MIN_LENGTH = 8
MAX_LENGTH = 128  # argon2 takes any length; a cap keeps a login from being a CPU sink
COMMON_PASSWORDS = Path(__file__).parent / "data" / "common-passwords.txt.gz"
#: argon2 hashes computed at once in one process. Each holds ``ARGON2_MEMORY_KIB``
#: (64 MiB by default) and keeps a core busy, so more at once only adds memory: a
#: burst of logins (32 gthread threads, thousands of greenlets) queues here instead.
MAX_CONCURRENT_HASHES = os.cpu_count() or 2
_hashing = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)


@dataclass(frozen=True)
class _Hasher:
    hasher: PasswordHasher
    #: A hash verified when the user does not exist, so that an unknown username
    #: costs the same time as a wrong password (no user enumeration).
    dummy_hash: str


@cache
def _build(time_cost: int, memory_kib: int, parallelism: int) -> _Hasher:
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
    return _Hasher(hasher, hasher.hash("not a real password: only spends the same time"))


def _hasher() -> _Hasher:
    config = current_app.config
    return _build(
        config["ARGON2_TIME_COST"], config["ARGON2_MEMORY_KIB"], config["ARGON2_PARALLELISM"]
    )


def hash_password(password: str) -> str:
    with _hashing:
        return _hasher().hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password against a stored hash in constant time; ``None`` means no such user."""
    hasher = _hasher()
    try:
        with _hashing:
            matched = hasher.hasher.verify(password_hash or hasher.dummy_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    return matched and password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    return _hasher().hasher.check_needs_rehash(password_hash)


@cache
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS, "rt", encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())


def password_problems(password: str, *, username: str = "", email: str = "") -> list[str]:
    """Every rule the password breaks, as messages for the form (empty when it is fine)."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"Use at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        problems.append(f"Use at most {MAX_LENGTH} characters.")
    if password.isdigit():
        problems.append("Use more than digits.")
    lowered = password.lower()
    names = {username.lower(), email.lower(), email.lower().split("@")[0]} - {""}
    if any(name and (lowered == name or name in lowered and len(name) >= 4) for name in names):
        problems.append("Do not use your username or email in the password.")
    if lowered in common_passwords():
        problems.append("This password is too common; choose one that is harder to guess.")
    return problems
