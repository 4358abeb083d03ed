"""Users, as rows in the ``users`` table; parameterized SQL through :mod:`project.db`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from project.extensions import db


@dataclass(frozen=True)
class User:
    id: int
    username: str
    email: str
    is_active: bool
    is_admin: bool
    created_at: datetime | str
    last_login_at: datetime | str | None

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
        )


USER_COLUMNS = "id, username, email, is_active, is_admin, created_at, last_login_at"


def get_user(user_id: int) -> User | None:
    row = db.fetch_one(f"SELECT {USER_COLUMNS} FROM users WHERE id = %s", (user_id,))  # noqa: S608
    return User.from_row(row) if row else None


def get_active_user(user_id: int) -> User | None:
    """The user with this id if the account may be used; deactivated accounts are refused."""
    user = get_user(user_id)
    return user if user is not None and user.is_active else None
