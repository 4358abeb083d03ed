"""Each user's open sessions: listed on the profile page, ended one by one or all at once.

Flask-Session keys a session by its id alone, so nothing finds "all of
alice's sessions". This index keeps, next to the sessions themselves (in Redis,
or in the filesystem cache on the embedded stack), a map per user from session
id to what the user sees: device, address, when it started, when last seen.
Ending a session deletes it from the store, so its cookie opens nothing.
Entries whose session has expired on its own are pruned when listed.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from flask import current_app, request, session

SEEN_RESOLUTION = 60  # seconds between updates of "last seen" in the index


def handle_of(sid: str) -> str:
    """What pages show for a session: a session id itself never leaves the server."""
    return hashlib.sha256(sid.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class SessionInfo:
    sid: str
    device: str
    ip: str
    started: int
    seen: int
    current: bool

    @property
    def handle(self) -> str:
        return handle_of(self.sid)


def current_sid() -> str:
    """The id of this request's server-side session (Flask-Session adds ``sid``)."""
    sid: str = session.sid  # type: ignore[attr-defined]
    return sid


def _interface() -> Any:
    return current_app.session_interface


def _index_prefix() -> str:
    return f"{current_app.config['REDIS_KEY_PREFIX']}user_sessions:"


def _index_key(user_id: int) -> str:
    return f"{_index_prefix()}{user_id}"


class _RedisIndex:
    """One Redis hash per user: session id -> msgpack entry (each field updated atomically)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def put(self, user_id: int, sid: str, entry: dict[str, Any]) -> None:
        key = _index_key(user_id)
        pipe = self.client.pipeline()
        pipe.hset(key, sid, msgspec.msgpack.encode(entry))
        pipe.expire(key, current_app.config["SESSION_LIFETIME_SECONDS"])
        pipe.execute()

    def entries(self, user_id: int) -> dict[str, dict[str, Any]]:
        raw = self.client.hgetall(_index_key(user_id))
        return {k.decode(): msgspec.msgpack.decode(v) for k, v in raw.items()}

    def remove(self, user_id: int, sid: str) -> None:
        self.client.hdel(_index_key(user_id), sid)

    def count(self) -> int:
        keys = list(self.client.scan_iter(match=_index_prefix() + "*", count=1000))
        if not keys:
            return 0
        pipe = self.client.pipeline()
        for key in keys:
            pipe.hlen(key)
        return sum(pipe.execute())


class _CacheIndex:
    """The same on cachelib's filesystem cache; a lock serialises this process's updates."""

    _lock = threading.Lock()

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def put(self, user_id: int, sid: str, entry: dict[str, Any]) -> None:
        with self._lock:
            entries = self.entries(user_id)
            entries[sid] = entry
            self._save(user_id, entries)

    def entries(self, user_id: int) -> dict[str, dict[str, Any]]:
        return dict(self.cache.get(_index_key(user_id)) or {})

    def remove(self, user_id: int, sid: str) -> None:
        with self._lock:
            entries = self.entries(user_id)
            entries.pop(sid, None)
            self._save(user_id, entries)

    def count(self) -> int:
        return sum(len(self.entries(user_id)) for user_id in self._users())

    def _users(self) -> set[int]:
        return set(self.cache.get(_index_prefix() + "users") or [])

    def _save(self, user_id: int, entries: dict[str, Any]) -> None:
        lifetime = current_app.config["SESSION_LIFETIME_SECONDS"]
        self.cache.set(_index_key(user_id), entries, timeout=lifetime)
        # cachelib cannot list keys, so the users with sessions are kept in a key of their own.
        users = self._users()
        if entries:
            users.add(user_id)
        else:
            users.discard(user_id)
        self.cache.set(_index_prefix() + "users", sorted(users), timeout=lifetime)


def _index() -> _RedisIndex | _CacheIndex:
    interface = _interface()
    if hasattr(interface, "client"):
        return _RedisIndex(interface.client)
    return _CacheIndex(interface.cache)


def _session_exists(sid: str) -> bool:
    interface = _interface()
    return interface._retrieve_session_data(interface._get_store_id(sid)) is not None


def _delete(sid: str) -> None:
    interface = _interface()
    interface._delete_session(interface._get_store_id(sid))


def remember_current(user_id: int) -> None:
    """Add the session that just logged in to the user's index."""
    now = int(time.time())
    _index().put(
        user_id,
        current_sid(),
        {
            "device": (request.user_agent.string or "unknown device")[:200],
            "ip": request.remote_addr or "",
            "started": now,
            "seen": now,
        },
    )
    session["indexed_at"] = now


def validate_current(user_id: int) -> bool:
    """Whether the current login session is still in the user's index; refreshes "last seen".

    The index is what makes a session valid: a request that was in flight when
    its session was ended may write the session back to the store, but it will
    not be in the index, so its next request is refused.
    """
    index = _index()
    entry = index.entries(user_id).get(current_sid())
    if entry is None:
        return False
    now = int(time.time())
    if now - int(session.get("indexed_at", 0)) >= SEEN_RESOLUTION:
        entry.update(seen=now, ip=request.remote_addr or entry["ip"])
        index.put(user_id, current_sid(), entry)
        session["indexed_at"] = now
    return True


def list_sessions(user_id: int) -> list[SessionInfo]:
    """The user's live sessions, newest activity first; expired ones are pruned."""
    index = _index()
    current = current_sid()
    result = []
    for sid, entry in index.entries(user_id).items():
        if not _session_exists(sid):
            index.remove(user_id, sid)
            continue
        result.append(
            SessionInfo(
                sid=sid,
                device=entry["device"],
                ip=entry["ip"],
                started=entry["started"],
                seen=entry["seen"],
                current=sid == current,
            )
        )
    return sorted(result, key=lambda s: s.seen, reverse=True)


def end_session(user_id: int, handle: str) -> bool:
    """End the user's session with this handle; False if it is not theirs or already over."""
    index = _index()
    sid = next((sid for sid in index.entries(user_id) if handle_of(sid) == handle), None)
    if sid is None:
        return False
    _delete(sid)
    index.remove(user_id, sid)
    return True


def end_all_sessions(user_id: int, *, keep: str | None = None) -> int:
    """End every session of the user except *keep*; returns how many were ended."""
    index = _index()
    ended = 0
    for sid in index.entries(user_id):
        if sid == keep:
            continue
        _delete(sid)
        index.remove(user_id, sid)
        ended += 1
    return ended


def count_sessions() -> int:
    """Open login sessions across all users (for the admin dashboard)."""
    return _index().count()


def forget_current(user_id: int) -> None:
    _index().remove(user_id, current_sid())
