"""What a gap in pub/sub swallowed, found again in the database (the source of truth).

Every chat message is stored before it is announced. When a process's
subscription drops (Redis restarted) or one of its publishes fails, the
broker asks :class:`ChatRecovery` which stored messages of its rooms its
sockets have not been sent, and delivers them. Announcements may reach
processes out of id order (two workers store 10 and 11, 11 is announced
first), so the look-back starts a little before the gap, and the ids sent
recently are remembered to skip what did arrive. A client drops duplicates
by id in any case.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque

from flask import Flask

from apps.realtime import models
from project.extensions import db

#: Seconds before the gap whose messages are looked at again (announcements in flight).
LOOK_BACK = 30.0
#: Ids remembered per room (covers LOOK_BACK at any plausible rate of a room).
REMEMBERED = 4096
#: Messages delivered per room at most after one gap (as for a reconnecting client).
MISSED_LIMIT = 500


class ChatRecovery:
    """This process's record of the messages each room was sent."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._recent: dict[str, deque[tuple[float, int]]] = {}  # room -> (when, id), in order
        self._ids: dict[str, set[int]] = {}

    def seen(self, room: str, payload: str) -> None:
        if not models.ROOM_NAME.match(room):
            return  # another app's topic on the same broker
        try:
            data = json.loads(payload)
        except ValueError:
            return
        message_id = data.get("id") if isinstance(data, dict) else None
        if data.get("type") != "message" or not isinstance(message_id, int):
            return
        with self._lock:
            recent = self._recent.setdefault(room, deque())
            ids = self._ids.setdefault(room, set())
            if message_id in ids:
                return
            recent.append((time.time(), message_id))
            ids.add(message_id)
            while len(recent) > REMEMBERED:
                ids.discard(recent.popleft()[1])

    def missed(self, rooms: list[str], since: float) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        with self.app.app_context():
            try:
                for name in rooms:
                    if not models.ROOM_NAME.match(name):
                        continue
                    room = models.get_room(name)
                    if room is None:
                        continue
                    after, ids = self._cursor(name, since)
                    if after is None:
                        messages = models.messages_since(room.id, since - LOOK_BACK, MISSED_LIMIT)
                    else:
                        messages = models.messages_after(room.id, after, MISSED_LIMIT)
                    found += [(name, json.dumps(m.as_json())) for m in messages if m.id not in ids]
            finally:
                db.release()
        return found

    def _cursor(self, room: str, since: float) -> tuple[int | None, set[int]]:
        """The id to look after (None: nothing sent here yet) and the ids sent recently."""
        with self._lock:
            recent = list(self._recent.get(room, ()))
            ids = set(self._ids.get(room, ()))
        if not recent:
            return None, ids
        around_gap = [message_id for when, message_id in recent if when >= since - LOOK_BACK]
        if around_gap:
            return min(around_gap) - 1, ids
        return max(message_id for _, message_id in recent), ids
