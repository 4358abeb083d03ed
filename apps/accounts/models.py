"""Accounts data: users, audit log, login attempts, API keys, reset tokens.

All SQL is parameterized and runs unchanged on MySQL/MariaDB and SQLite
through :mod:`project.db`. Usernames are unique case-insensitively: the
``username_key`` column holds the case-folded name and carries the unique index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apps.accounts.exceptions import DuplicateUser, LastAdminError
from project.db import IntegrityError, utcnow
from project.extensions import db


def username_key(username: str) -> str:
    return username.casefold()


def normalize_email(email: str) -> str:
    """Emails compare case-insensitively here (almost every provider does)."""
    return email.strip().lower()


@dataclass(frozen=True)
class User:
    id: int
    username: str
    email: str
    is_active: bool
    is_admin: bool
    created_at: datetime
    last_login_at: datetime | None
    # Known when the user was read one at a time (get_user...), not in lists: False there.
    has_second_factor: bool = False

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> User:
        return cls(
            id=int(row["id"]),
            username=row["username"],
            email=row["email"],
            is_active=bool(row["is_active"]),
            is_admin=bool(row["is_admin"]),
            created_at=row["created_at"],
            last_login_at=row["last_login_at"],
            has_second_factor=bool(row.get("has_second_factor")),
        )


USER_COLUMNS = "id, username, email, is_active, is_admin, created_at, last_login_at"
#: One user with whether a second factor is on, in the same round trip (login, every
#: logged-in request's user, the admin gate).
_ONE_USER = (
    "SELECT u.id, u.username, u.email, u.is_active, u.is_admin, u.created_at,"
    " u.last_login_at, t.confirmed_at IS NOT NULL AS has_second_factor"
    " FROM users u LEFT JOIN two_factor t ON t.user_id = u.id"
)


# -- users -------------------------------------------------------------------------------


def get_user(user_id: int) -> User | None:
    row = db.fetch_one(f"{_ONE_USER} WHERE u.id = %s", (user_id,))
    return User.from_row(row) if row else None


def get_active_user(user_id: int) -> User | None:
    """The user with this id if the account may be used; deactivated accounts are refused."""
    user = get_user(user_id)
    return user if user is not None and user.is_active else None


def get_user_by_login(login: str) -> User | None:
    """Find a user by username (any case) or by email."""
    login = login.strip()
    if "@" in login:
        sql = f"{_ONE_USER} WHERE u.email = %s"
        row = db.fetch_one(sql, (normalize_email(login),))
    else:
        sql = f"{_ONE_USER} WHERE u.username_key = %s"
        row = db.fetch_one(sql, (username_key(login),))
    return User.from_row(row) if row else None


def get_password_hash(user_id: int) -> str | None:
    value = db.fetch_value("SELECT password_hash FROM users WHERE id = %s", (user_id,))
    return str(value) if value is not None else None


def username_taken(username: str, exclude_id: int | None = None) -> bool:
    return _taken("username_key", username_key(username), exclude_id)


def email_taken(email: str, exclude_id: int | None = None) -> bool:
    return _taken("email", normalize_email(email), exclude_id)


def _taken(column: str, value: str, exclude_id: int | None) -> bool:
    sql = f"SELECT id FROM users WHERE {column} = %s AND id <> %s"
    return db.fetch_one(sql, (value, exclude_id or 0)) is not None


def create_user(username: str, email: str, password_hash: str, *, is_admin: bool = False) -> User:
    """Insert a user.

    Raises:
        DuplicateUser: the username or email is taken (checked again by the unique indexes,
            so two simultaneous registrations cannot both win).
    """
    if username_taken(username):
        raise DuplicateUser("username")
    if email_taken(email):
        raise DuplicateUser("email")
    try:
        result = db.execute(
            "INSERT INTO users (username, username_key, email, password_hash, is_active,"
            " is_admin, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                username,
                username_key(username),
                normalize_email(email),
                password_hash,
                True,
                is_admin,
                utcnow(),
            ),
        )
    except IntegrityError as exc:  # lost a race with another registration
        raise DuplicateUser("email" if email_taken(email) else "username") from exc
    user = get_user(int(result.lastrowid or 0))
    assert user is not None
    return user


def set_password_hash(user_id: int, password_hash: str) -> None:
    """A new password: open reset links die with the old one (they could undo the change)."""
    with db.transaction():
        db.execute("UPDATE users SET password_hash = %s WHERE id = %s", (password_hash, user_id))
        void_reset_tokens(user_id)


def store_rehashed_password(user_id: int, password_hash: str) -> None:
    """The same password hashed with new parameters (at login): reset links stay open."""
    db.execute("UPDATE users SET password_hash = %s WHERE id = %s", (password_hash, user_id))


def record_login(user_id: int) -> None:
    db.execute("UPDATE users SET last_login_at = %s WHERE id = %s", (utcnow(), user_id))


def update_email(user_id: int, email: str) -> None:
    """A new address: links mailed to the old one stop working (it may be the attacker's)."""
    if email_taken(email, exclude_id=user_id):
        raise DuplicateUser("email")
    try:
        with db.transaction():
            db.execute(
                "UPDATE users SET email = %s WHERE id = %s", (normalize_email(email), user_id)
            )
            void_reset_tokens(user_id)
    except IntegrityError as exc:
        raise DuplicateUser("email") from exc


def active_admin_count() -> int:
    return int(
        db.fetch_value(
            "SELECT COUNT(*) FROM users WHERE is_admin = %s AND is_active = %s", (True, True)
        )
        or 0
    )


def _lock_active_admins() -> int:
    """Count the active admins and hold their rows until the transaction ends.

    Two admins demoting each other at once would otherwise each count two and
    both go ahead. The admins are found first, then locked by primary key
    (``FOR UPDATE`` re-reads each row as committed, so one demoted meanwhile no
    longer counts): the second demotion waits for the first and then counts what
    it left. Locking by primary key takes no gap locks on the ``users_admins``
    index, which the demotion's own update writes to (locking through that index
    made two such transactions deadlock). An admin promoted meanwhile is not
    counted, which can only make the rule stricter. SQLite's ``BEGIN IMMEDIATE``
    already serialises the writers.
    """
    active_admin = "SELECT id FROM users WHERE is_admin = %s AND is_active = %s"
    ids = [row["id"] for row in db.fetch_all(active_admin, (True, True))]
    if db.engine == "sqlite" or not ids:
        return len(ids)
    marks = ", ".join(["%s"] * len(ids))
    locked = db.fetch_all(
        f"SELECT is_admin, is_active FROM users FORCE INDEX (PRIMARY) WHERE id IN ({marks})"
        " ORDER BY id FOR UPDATE",
        tuple(sorted(ids)),
    )
    return sum(1 for row in locked if row["is_admin"] and row["is_active"])


def set_flags(user_id: int, *, is_active: bool | None = None, is_admin: bool | None = None) -> None:
    """Change flags, refusing to leave the site without an active admin.

    Raises:
        LastAdminError: the change would remove the last active admin.
    """
    with db.transaction():
        admins = _lock_active_admins()
        user = get_user(user_id)
        if user is None:
            return
        loses_admin = user.is_admin and user.is_active and (is_active is False or is_admin is False)
        if loses_admin and admins <= 1:
            raise LastAdminError("the site must keep at least one active admin")
        if is_active is not None:
            db.execute("UPDATE users SET is_active = %s WHERE id = %s", (is_active, user_id))
        if is_admin is not None:
            db.execute("UPDATE users SET is_admin = %s WHERE id = %s", (is_admin, user_id))


def delete_user(user_id: int) -> None:
    with db.transaction():
        admins = _lock_active_admins()
        user = get_user(user_id)
        if user and user.is_admin and user.is_active and admins <= 1:
            raise LastAdminError("the site must keep at least one active admin")
        db.execute("DELETE FROM users WHERE id = %s", (user_id,))


# -- audit log and login attempts ------------------------------------------------------------


def audit(
    action: str,
    *,
    actor_id: int | None,
    target_user_id: int | None = None,
    detail: str = "",
    ip: str = "",
) -> None:
    db.execute(
        "INSERT INTO audit_log (actor_id, action, target_user_id, detail, ip, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (actor_id, action, target_user_id, detail[:1000], ip[:45], utcnow()),
    )


def record_login_attempt(login: str, user_id: int | None, ip: str, succeeded: bool) -> None:
    db.execute(
        "INSERT INTO login_attempts (username_key, user_id, ip, succeeded, created_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (username_key(login)[:150], user_id, ip[:45], succeeded, utcnow()),
    )


def login_counts_today() -> dict[str, int]:
    """Logins that succeeded and failed since midnight UTC (the dashboard's figures)."""
    since = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    logins = (
        db.fetch_one(
            "SELECT COALESCE(SUM(CASE WHEN succeeded THEN 1 ELSE 0 END), 0) AS ok,"
            " COALESCE(SUM(CASE WHEN succeeded THEN 0 ELSE 1 END), 0) AS failed"
            " FROM login_attempts WHERE created_at >= %s",
            (since,),
        )
        or {}
    )
    return {
        "logins_today": int(logins.get("ok") or 0),
        "failed_logins_today": int(logins.get("failed") or 0),
    }


# -- password reset tokens -------------------------------------------------------------------


def create_reset_token(user_id: int, token_hash: str, lifetime: timedelta) -> None:
    now = utcnow()
    with db.transaction():
        void_reset_tokens(user_id)  # one live link at a time: a new request voids the others
        db.execute(
            "INSERT INTO password_reset_tokens (user_id, token_hash, created_at, expires_at)"
            " VALUES (%s, %s, %s, %s)",
            (user_id, token_hash, now, now + lifetime),
        )


def void_reset_tokens(user_id: int) -> None:
    """Every open reset link of the user stops working."""
    db.execute(
        "UPDATE password_reset_tokens SET used_at = %s WHERE user_id = %s AND used_at IS NULL",
        (utcnow(), user_id),
    )


def consume_reset_token(token_hash: str) -> int | None:
    """Mark a live token used and return its user id; None when unknown, used or expired."""
    now = utcnow()
    with db.transaction():
        row = db.fetch_one(
            "SELECT id, user_id FROM password_reset_tokens WHERE token_hash = %s"
            " AND used_at IS NULL AND expires_at > %s",
            (token_hash, now),
        )
        if row is None:
            return None
        claimed = db.execute(
            "UPDATE password_reset_tokens SET used_at = %s WHERE id = %s AND used_at IS NULL",
            (now, row["id"]),
        )
        return int(row["user_id"]) if claimed.rowcount == 1 else None


def reset_token_user(token_hash: str) -> int | None:
    """The user id of a live (unused, unexpired) token, without using it up."""
    value = db.fetch_value(
        "SELECT user_id FROM password_reset_tokens WHERE token_hash = %s AND used_at IS NULL"
        " AND expires_at > %s",
        (token_hash, utcnow()),
    )
    return int(value) if value is not None else None
