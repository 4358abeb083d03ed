"""Chat rooms and messages, in the database (parameterized SQL via :mod:`project.db`)."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apps.realtime.exceptions import RoomExists
from project.db import IntegrityError, utcnow
from project.extensions import db
from project.shared_files import SharedFile

ROOM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}\Z")


@dataclass(frozen=True)
class Room:
    id: int
    name: str
    created_at: datetime
    message_count: int = 0


@dataclass(frozen=True)
class Attachment:
    """A file posted with a message, as it was when posted; ``removed`` once it is deleted."""

    file: SharedFile
    removed: bool = False

    def as_json(self) -> dict[str, Any]:
        if self.removed:
            return {"id": self.file.id, "name": self.file.name, "removed": True}
        return self.file.as_json()


@dataclass(frozen=True)
class Message:
    id: int
    username: str
    body: str
    created_at: datetime
    client_id: str | None = None  # the sender's name for it, so a resend finds it
    attachment: Attachment | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "message",
            "id": self.id,
            "user": self.username,
            "body": self.body,
            "sent_at": self.created_at.isoformat(timespec="milliseconds") + "Z",
        }
        if self.client_id is not None:
            data["client_id"] = self.client_id
        if self.attachment is not None:
            data["file"] = self.attachment.as_json()
        return data


MESSAGE_COLUMNS = (
    "id, username, body, created_at, client_id,"
    " file_id, file_name, file_size, file_sha256, file_removed, user_id"
)


def list_rooms() -> list[Room]:
    rows = db.fetch_all(
        "SELECT r.id, r.name, r.created_at, COUNT(m.id) AS message_count FROM chat_rooms r"
        " LEFT JOIN chat_messages m ON m.room_id = r.id"
        " GROUP BY r.id, r.name, r.created_at ORDER BY r.name"
    )
    return [Room(int(r["id"]), r["name"], r["created_at"], int(r["message_count"])) for r in rows]


def get_room(name: str) -> Room | None:
    row = db.fetch_one("SELECT id, name, created_at FROM chat_rooms WHERE name = %s", (name,))
    return Room(int(row["id"]), row["name"], row["created_at"]) if row else None


def create_room(name: str, user_id: int) -> Room:
    """Create a room.

    Raises:
        RoomExists: the name is taken.
    """
    try:
        db.execute(
            "INSERT INTO chat_rooms (name, created_by, created_at) VALUES (%s, %s, %s)",
            (name, user_id, utcnow()),
        )
    except IntegrityError as exc:
        raise RoomExists(name) from exc
    room = get_room(name)
    assert room is not None
    return room


def add_message(
    room_id: int,
    user_id: int,
    username: str,
    body: str,
    client_id: str | None = None,
    file: SharedFile | None = None,
) -> tuple[Message, bool]:
    """Store a message (with one of the sender's files); returns it and whether it is new.

    A message the same user already sent to this room under *client_id* (a
    resend) is not stored again: the stored one comes back, with False.

    Raises:
        IntegrityError: *client_id* names the user's message in another room.
    """
    now = utcnow()
    f = file
    try:
        result = db.execute(
            "INSERT INTO chat_messages (room_id, user_id, username, body, created_at, client_id,"
            " file_id, file_name, file_size, file_sha256)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                room_id,
                user_id,
                username,
                body,
                now,
                client_id,
                f.id if f else None,
                f.name if f else None,
                f.size if f else None,
                f.sha256 if f else None,
            ),
        )
    except IntegrityError:
        row = db.fetch_one(
            f"SELECT room_id, {MESSAGE_COLUMNS} FROM chat_messages"
            " WHERE user_id = %s AND client_id = %s",
            (user_id, client_id),
        )
        if client_id is None or row is None or int(row["room_id"]) != room_id:
            raise  # not a resend here: the name is taken in another room, or the room is gone
        return _messages([row])[0], False
    attachment = Attachment(file) if file else None
    return Message(int(result.lastrowid or 0), username, body, now, client_id, attachment), True


def _attachment(row: dict[str, Any]) -> Attachment | None:
    if row["file_id"] is None:
        return None
    file = SharedFile(row["file_id"], row["file_name"], int(row["file_size"]), row["file_sha256"])
    # Only its owner can post a file, so a sender whose account was deleted (user_id set
    # to NULL) took the file along: no delete listener ran for that, but it is gone.
    return Attachment(file, removed=bool(row["file_removed"]) or row["user_id"] is None)


def _messages(rows: list[dict[str, Any]]) -> list[Message]:
    return [
        Message(
            int(r["id"]), r["username"], r["body"], r["created_at"], r["client_id"], _attachment(r)
        )
        for r in rows
    ]


def delete_message(room_id: int, message_id: int, user_id: int) -> bool:
    """Delete one of *user_id*'s messages in the room; False if there is no such message."""
    result = db.execute(
        "DELETE FROM chat_messages WHERE id = %s AND room_id = %s AND user_id = %s",
        (message_id, room_id, user_id),
    )
    return result.rowcount == 1


# -- members and the files posted to them ------------------------------------------------------


def join(room_id: int, user_id: int) -> None:
    """Record that the user has joined the room (once; later joins change nothing)."""
    if is_member(room_id, user_id):
        return
    with contextlib.suppress(IntegrityError):  # joined a moment ago, on another socket
        db.execute(
            "INSERT INTO chat_members (room_id, user_id, joined_at) VALUES (%s, %s, %s)",
            (room_id, user_id, utcnow()),
        )


def is_member(room_id: int, user_id: int) -> bool:
    found = db.fetch_value(
        "SELECT 1 FROM chat_members WHERE room_id = %s AND user_id = %s", (room_id, user_id)
    )
    return found is not None


def may_read_file(user_id: int, file_id: str) -> bool:
    """Whether the file is on a message, still there, in a room the user has joined."""
    found = db.fetch_value(
        "SELECT 1 FROM chat_messages m JOIN chat_members c"
        " ON c.room_id = m.room_id AND c.user_id = %s"
        " WHERE m.file_id = %s AND m.file_removed = %s AND m.user_id IS NOT NULL LIMIT 1",
        (user_id, file_id, False),
    )
    return found is not None


def file_removed(file_id: str) -> int:
    """Mark the messages that carried a deleted file; returns how many."""
    return db.execute(
        "UPDATE chat_messages SET file_removed = %s WHERE file_id = %s", (True, file_id)
    ).rowcount


def recent_messages(room_id: int, limit: int, before: int | None = None) -> list[Message]:
    """The newest *limit* messages (older than *before*, when given), oldest first."""
    sql = f"SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE room_id = %s"
    params: list[Any] = [room_id]
    if before is not None:
        sql += " AND id < %s"
        params.append(before)
    rows = db.fetch_all(sql + " ORDER BY id DESC LIMIT %s", [*params, limit])
    return _messages(rows)[::-1]


def messages_after(room_id: int, after: int, limit: int) -> list[Message]:
    """Messages newer than *after* (what a reconnecting client missed), oldest first."""
    rows = db.fetch_all(
        f"SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE room_id = %s AND id > %s"
        " ORDER BY id LIMIT %s",
        (room_id, after, limit),
    )
    return _messages(rows)


def messages_since(room_id: int, when: float, limit: int) -> list[Message]:
    """Messages stored at or after the Unix time *when*, oldest first."""
    start = datetime.fromtimestamp(when, UTC).replace(tzinfo=None)
    rows = db.fetch_all(
        f"SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE room_id = %s AND created_at >= %s"
        " ORDER BY id LIMIT %s",
        (room_id, start, limit),
    )
    return _messages(rows)
