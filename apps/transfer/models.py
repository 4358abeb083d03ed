"""Files, unfinished uploads and share links in the database (parameterized SQL).

One row per file from its first byte to its deletion: ``state`` is
``uploading`` until every byte is there and verified, then ``complete``.
``received`` is the offset the next byte goes to; the bytes themselves live on
disk (:mod:`apps.transfer.storage`), so any worker or host sharing the volume
and the database can take the next chunk.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apps.transfer.exceptions import QuotaExceeded
from apps.transfer.wire import FILE_ID
from project.db import utcnow
from project.extensions import db
from project.shared_files import SharedFile

UPLOADING = "uploading"
COMPLETE = "complete"

COLUMNS = (
    "id, owner_id, filename, content_type, size, received, state, sha256, expected_sha256,"
    " metadata, created_at, updated_at, expires_at, completed_at"
)


@dataclass(frozen=True)
class TransferFile:
    id: str
    owner_id: int
    filename: str
    content_type: str
    size: int
    received: int
    state: str
    sha256: str | None
    expected_sha256: str | None
    metadata: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TransferFile:
        values = {k: row[k] for k in cls.__dataclass_fields__}
        for k in ("owner_id", "size", "received"):
            values[k] = int(values[k])
        return cls(**values)

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE

    def expired(self, now: datetime | None = None) -> bool:
        return (
            not self.complete
            and self.expires_at is not None
            and self.expires_at <= (now or utcnow())
        )


ID_PATTERN = FILE_ID  # the wire format owns the shape of an id; the client checks it too


def new_id() -> str:
    """128 random bits: the public id, the URL part and the file's name on disk."""
    return secrets.token_hex(16)


def create(
    owner_id: int,
    *,
    filename: str,
    content_type: str,
    size: int,
    metadata: str,
    expected_sha256: str | None,
    quota: int,
    expiry_seconds: int,
) -> TransferFile:
    """Insert an upload, refusing it when it would pass the owner's quota.

    The quota check and the insert are one transaction that locks the owner's
    row, so two uploads started at once cannot both squeeze into the last gigabyte.
    """
    now = utcnow()
    file_id = new_id()
    with db.transaction():
        lock = " FOR UPDATE" if db.engine == "mysql" else ""
        db.fetch_value(f"SELECT id FROM users WHERE id = %s{lock}", (owner_id,))
        used = usage(owner_id)
        if used + size > quota:
            raise QuotaExceeded(used, quota, size)
        db.execute(
            f"INSERT INTO transfer_files ({COLUMNS}) VALUES"
            " (%s, %s, %s, %s, %s, 0, %s, NULL, %s, %s, %s, %s, %s, NULL)",
            (
                file_id,
                owner_id,
                filename,
                content_type,
                size,
                UPLOADING,
                expected_sha256,
                metadata,
                now,
                now,
                now + timedelta(seconds=expiry_seconds),
            ),
        )
    found = get(file_id)
    assert found is not None
    return found


def get(file_id: str, owner_id: int | None = None) -> TransferFile | None:
    """The file or upload *file_id* (of *owner_id*, when given); None for any other id."""
    if not ID_PATTERN.match(file_id):
        return None  # a URL's id that is not one of ours: not worth a query
    sql = f"SELECT {COLUMNS} FROM transfer_files WHERE id = %s"
    params: list[Any] = [file_id]
    if owner_id is not None:
        sql += " AND owner_id = %s"
        params.append(owner_id)
    row = db.fetch_one(sql, params)
    return TransferFile.from_row(row) if row else None


def shared(owner_id: int, file_id: str) -> SharedFile | None:
    """*file_id* as other apps may see it, if it is *owner_id*'s finished file."""
    file = get(file_id, owner_id=owner_id)
    if file is None or not file.complete or file.sha256 is None:
        return None
    return SharedFile(file.id, file.filename, file.size, file.sha256)


def list_for(owner_id: int) -> list[TransferFile]:
    rows = db.fetch_all(
        f"SELECT {COLUMNS} FROM transfer_files WHERE owner_id = %s ORDER BY created_at DESC, id",
        (owner_id,),
    )
    return [TransferFile.from_row(r) for r in rows]


def find_resumable(
    owner_id: int, filename: str, size: int, sha256: str | None, metadata: str = ""
) -> TransferFile | None:
    """The newest unfinished, unexpired upload of the same bytes under the same name.

    *sha256* None finds an upload whose hash is not known yet: one started by a
    TCP PUSH that declares it in a trailer, recognised by its *metadata* (a tus
    upload in progress, whose hash is not known either, must never be taken).
    """
    same = "expected_sha256 = %s" if sha256 else "expected_sha256 IS NULL AND metadata = %s"
    row = db.fetch_one(
        f"SELECT {COLUMNS} FROM transfer_files WHERE owner_id = %s AND state = %s"
        f" AND filename = %s AND size = %s AND {same} AND expires_at > %s"
        " ORDER BY updated_at DESC LIMIT 1",
        (owner_id, UPLOADING, filename, size, sha256 or metadata, utcnow()),
    )
    return TransferFile.from_row(row) if row else None


def has_hashed_unfinished(owner_id: int, filename: str, size: int) -> bool:
    """Whether an unfinished upload of this name and size was declared with its SHA-256."""
    return (
        db.fetch_value(
            "SELECT 1 FROM transfer_files WHERE owner_id = %s AND state = %s AND filename = %s"
            " AND size = %s AND expected_sha256 IS NOT NULL AND expires_at > %s LIMIT 1",
            (owner_id, UPLOADING, filename, size, utcnow()),
        )
        is not None
    )


def usage(owner_id: int) -> int:
    """Bytes the owner holds or has reserved: files plus the full size of open uploads."""
    return int(
        db.fetch_value(
            "SELECT COALESCE(SUM(size), 0) FROM transfer_files WHERE owner_id = %s", (owner_id,)
        )
    )


def record_progress(file_id: str, received: int, expiry_seconds: int) -> None:
    now = utcnow()
    db.execute(
        "UPDATE transfer_files SET received = %s, updated_at = %s, expires_at = %s WHERE id = %s",
        (received, now, now + timedelta(seconds=expiry_seconds), file_id),
    )


def mark_complete(file_id: str, sha256: str) -> None:
    now = utcnow()
    db.execute(
        "UPDATE transfer_files SET state = %s, sha256 = %s, received = size, updated_at = %s,"
        " completed_at = %s, expires_at = NULL WHERE id = %s",
        (COMPLETE, sha256, now, now, file_id),
    )


def delete(file_id: str) -> bool:
    return db.execute("DELETE FROM transfer_files WHERE id = %s", (file_id,)).rowcount == 1


def expired_uploads(now: datetime) -> list[TransferFile]:
    rows = db.fetch_all(
        f"SELECT {COLUMNS} FROM transfer_files WHERE state = %s AND expires_at <= %s",
        (UPLOADING, now),
    )
    return [TransferFile.from_row(r) for r in rows]


def all_ids() -> set[str]:
    return {r["id"] for r in db.fetch_all("SELECT id FROM transfer_files")}


# -- share links ---------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    id: int
    file_id: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > utcnow()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_share(file_id: str, days: int) -> tuple[Share, str]:
    """A new link token (256 random bits, shown once; only its hash is kept)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    result = db.execute(
        "INSERT INTO transfer_shares (file_id, token_hash, created_at, expires_at)"
        " VALUES (%s, %s, %s, %s)",
        (file_id, _token_hash(token), now, now + timedelta(days=days)),
    )
    share = Share(int(result.lastrowid or 0), file_id, now, now + timedelta(days=days), None)
    return share, token


def list_shares(file_id: str) -> list[Share]:
    rows = db.fetch_all(
        "SELECT id, file_id, created_at, expires_at, revoked_at FROM transfer_shares"
        " WHERE file_id = %s ORDER BY created_at DESC, id DESC",
        (file_id,),
    )
    return [
        Share(int(r["id"]), r["file_id"], r["created_at"], r["expires_at"], r["revoked_at"])
        for r in rows
    ]


def share_allows(file_id: str, token: str) -> bool:
    """Whether *token* is a live (unrevoked, unexpired) link to *file_id*.

    The token is looked up by its SHA-256, so timing reveals nothing about it.
    """
    return (
        db.fetch_one(
            "SELECT id FROM transfer_shares WHERE token_hash = %s AND file_id = %s"
            " AND revoked_at IS NULL AND expires_at > %s",
            (_token_hash(token), file_id, utcnow()),
        )
        is not None
    )


def revoke_share(share_id: int, file_id: str) -> bool:
    return (
        db.execute(
            "UPDATE transfer_shares SET revoked_at = %s WHERE id = %s AND file_id = %s"
            " AND revoked_at IS NULL",
            (utcnow(), share_id, file_id),
        ).rowcount
        == 1
    )


def delete_dead_shares(now: datetime) -> int:
    return db.execute(
        "DELETE FROM transfer_shares WHERE revoked_at IS NOT NULL OR expires_at <= %s", (now,)
    ).rowcount
