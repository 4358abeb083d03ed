"""Each user's open sessions: listed on the profile page, ended one by one or all at once.

The session store and its per-user index belong to :mod:`project.sessions`;
this module gives them their meaning for accounts. Each login session is
indexed under its user with what the user sees: device, address, when it
started, when last seen. Ending a session deletes it from the store, so its
cookie opens nothing. Entries whose session has expired on its own are pruned
when listed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, request, session

from apps.accounts.devices import describe
from project.revocation import session_handle
from project.sessions import (
    current_sid,
    delete_session,
    index_count,
    index_entries,
    index_entries_with_liveness,
    index_put,
    index_remove,
)

SEEN_RESOLUTION = 60  # seconds between updates of "last seen" in the index


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
        return session_handle(self.sid)

    @property
    def device_name(self) -> str:
        """The browser and system in words; :attr:`device` is the raw User-Agent."""
        return describe(self.device)


def _forget_snapshot() -> None:
    """The index is about to change: what validation read of it no longer holds."""
    g.pop("session_index_snapshot", None)


def remember_current(user_id: int) -> None:
    """Add the session that just logged in to the user's index (pruned and capped first)."""
    _forget_snapshot()
    _make_room(user_id, current_app.config["SESSION_MAX_PER_USER"] - 1)
    now = int(time.time())
    index_put(
        user_id,
        current_sid(),
        {
            "device": (request.user_agent.string or "unknown device")[:200],
            "ip": request.remote_addr or "",
            "started": now,
            "seen": now,
            "login_ns": time.time_ns(),  # orders logins within one second
        },
    )
    session["indexed_at"] = now


def _make_room(user_id: int, keep: int) -> None:
    """Forget sessions that ended on their own; past *keep*, end the least recently seen.

    The index is read on every request, so it must not grow with every login
    ever made: a script that logs in each run would otherwise add an entry a run.
    """
    live = _live_entries(user_id)
    by_last_seen = sorted(
        live, key=lambda sid: (int(live[sid].get("seen", 0)), int(live[sid].get("login_ns", 0)))
    )
    for sid in by_last_seen[: max(0, len(live) - keep)]:
        delete_session(sid)
        index_remove(user_id, sid)


def _live_entries(user_id: int) -> dict[str, dict[str, Any]]:
    """The user's indexed sessions that are still in the store; the rest leave the index.

    On a page that validated the session, what validation read is used again (the
    session list then costs no round trip of its own); it is read afresh otherwise.
    """
    snapshot = g.pop("session_index_snapshot", None)
    if snapshot is not None and snapshot[0] == user_id:
        entries = snapshot[1]
    else:
        entries = index_entries_with_liveness(user_id)
    for sid, (_, alive) in entries.items():
        if not alive:
            index_remove(user_id, sid)
    return {sid: entry for sid, (entry, alive) in entries.items() if alive}


def validate_current(user_id: int) -> bool:
    """Whether the current login session is still in the user's index; refreshes "last seen".

    The index is what makes a session valid: a request that was in flight when
    its session was ended may write the session back to the store, but it will
    not be in the index, so its next request is refused. The index is read with
    each session's liveness, in one round trip, and kept for the rest of the
    request, so that a page listing the sessions does not read it again.
    """
    entries = index_entries_with_liveness(user_id)
    g.session_index_snapshot = (user_id, entries)
    entry = entries.get(current_sid(), (None, False))[0]
    if entry is None:
        return False
    now = int(time.time())
    if now - int(session.get("indexed_at", 0)) >= SEEN_RESOLUTION:
        entry.update(seen=now, ip=request.remote_addr or entry["ip"])
        index_put(user_id, current_sid(), entry)
        session["indexed_at"] = now
    return True


def list_sessions(user_id: int) -> list[SessionInfo]:
    """The user's live sessions, newest activity first; expired ones are pruned."""
    current = current_sid()
    result = []
    for sid, entry in _live_entries(user_id).items():
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
    _forget_snapshot()
    sid = next((sid for sid in index_entries(user_id) if session_handle(sid) == handle), None)
    if sid is None:
        return False
    delete_session(sid)
    index_remove(user_id, sid)
    return True


def end_all_sessions(user_id: int, *, keep: str | None = None) -> int:
    """End every session of the user except *keep*; returns how many were ended."""
    _forget_snapshot()
    ended = 0
    for sid in index_entries(user_id):
        if sid == keep:
            continue
        delete_session(sid)
        index_remove(user_id, sid)
        ended += 1
    return ended


def count_sessions() -> int:
    """Open login sessions across all users (for the admin dashboard)."""
    return index_count()


def forget_current(user_id: int) -> None:
    """Drop the current session from the user's index (it is logging out)."""
    _forget_snapshot()
    index_remove(user_id, current_sid())
