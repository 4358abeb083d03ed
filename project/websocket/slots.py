"""Open sockets per user, counted across every worker and host (``WEBSOCKET_MAX_PER_USER``).

Under gthread an open socket holds a thread for its whole life, so one free
account opening sockets could take every thread of every worker. Each user
may hold a bounded number at once; past it the handshake answers 429.

With Redis the count is one hash per user, a field per process. A process
keeps a liveness key alive (refreshed every ``PRESENCE_TTL / 3`` seconds), and
a count whose process has no liveness key is dropped at the next check, so
the sockets of a worker that was killed stop counting within ``PRESENCE_TTL``
seconds. The check and the increment run as one script, so two handshakes at
once cannot both take the last slot. Without Redis (one process) it is a dict.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter

import redis

from project.outages import OUTAGES, log_outage

log = logging.getLogger(__name__)

# KEYS[1]: the user's hash (process -> open sockets). ARGV: this process, the most
# allowed, the liveness key prefix. Counts of processes without a liveness key are dropped.
_ACQUIRE = """
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  local process, count = fields[i], tonumber(fields[i + 1])
  if process == ARGV[1] or redis.call('EXISTS', ARGV[3] .. process) == 1 then
    total = total + count
  else
    redis.call('HDEL', KEYS[1], process)
  end
end
if total >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], 86400)
return 1
"""


class SocketSlots:
    """At most *max_per_user* open sockets per user; Redis-backed when *client* is given."""

    def __init__(
        self, client: redis.Redis | None, prefix: str, max_per_user: int, ttl: float
    ) -> None:
        self.client = client
        self.prefix = f"{prefix}ws:"
        self.max_per_user = max_per_user
        self.ttl = max(1.0, ttl)
        self._lock = threading.Lock()
        self._local: Counter[int] = Counter()  # without Redis: open sockets per user
        self._pid = 0
        self._process = ""
        self._acquire = client.register_script(_ACQUIRE) if client is not None else None

    def acquire(self, user_id: int) -> bool:
        """Take a slot for one more socket of *user_id*; False when the user has them all."""
        if self._acquire is None:
            with self._lock:
                if self._local[user_id] >= self.max_per_user:
                    return False
                self._local[user_id] += 1
                return True
        process = self._alive()
        taken = self._acquire(
            keys=[f"{self.prefix}user:{user_id}"],
            args=[process, self.max_per_user, f"{self.prefix}alive:"],
        )
        return bool(taken)

    def release(self, user_id: int) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        if self.client is None:
            with self._lock:
                self._local[user_id] -= 1
                if self._local[user_id] <= 0:
                    del self._local[user_id]
            return
        key = f"{self.prefix}user:{user_id}"
        try:
            if self.client.hincrby(key, self._process, -1) <= 0:
                self.client.hdel(key, self._process)
        except redis.RedisError as exc:  # the slot heals when this process's key expires
            log.warning("could not release a socket slot: %s", exc)

    def _alive(self) -> str:
        """This process's name, its liveness key set and kept alive (after a fork, anew)."""
        assert self.client is not None
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._process = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:8]}"
                self._beat()
                threading.Thread(target=self._run, name="socket-slots", daemon=True).start()
            return self._process

    def _beat(self) -> None:
        assert self.client is not None
        self.client.set(f"{self.prefix}alive:{self._process}", 1, px=int(self.ttl * 1000))

    def _run(self) -> None:
        while True:  # for the life of the process: its liveness is what the key says
            time.sleep(self.ttl / 3)
            try:
                self._beat()
            except OUTAGES as exc:
                log_outage(exc, "keeping socket slots alive")
            except redis.RedisError as exc:
                log.warning("socket slots heartbeat failed: %s", exc)
