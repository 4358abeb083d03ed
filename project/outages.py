"""A backing service that is down: what counts as one, and the single log line it earns.

A restart of Redis or the database is an expected event, not a bug: requests
that need the service answer 503 with ``Retry-After`` (see :mod:`project.errors`)
and the log gets one warning line per service and window, not a traceback per
request. Anything else that goes wrong is still logged in full.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from project.db import OperationalError

log = logging.getLogger("project.outages")

#: Failures of a backing service rather than of our code.
OUTAGES: tuple[type[Exception], ...] = (
    OperationalError,
    redis.ConnectionError,  # includes BusyLoadingError: up, but still reading its AOF
    redis.TimeoutError,
)

#: Seconds a client is told to wait before retrying (the header and the socket frame).
RETRY_AFTER = 5

#: One line per service at most this often; the lines between are counted.
LOG_WINDOW = 10.0


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, OUTAGES)


def service_of(exc: BaseException) -> str:
    """Which backing service *exc* says is down ("database" or "redis")."""
    return "database" if isinstance(exc, OperationalError) else "redis"


class _OutageLog:
    """Log the first failure of a service in each window, and how many followed."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, exc: BaseException, doing: str) -> None:
        service = service_of(exc)
        now = time.monotonic()
        with self._lock:
            last = self._last.get(service)
            if last is not None and now - last < self.window:
                self._suppressed[service] = self._suppressed.get(service, 0) + 1
                return
            self._last[service] = now
            more = self._suppressed.pop(service, 0)
        detail = describe(exc)
        suffix = f" ({more} more failures since the last report)" if more else ""
        log.warning("%s unavailable while %s: %s%s", service, doing, detail, suffix)


def describe(exc: BaseException) -> str:
    """The exception in one line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


#: Record that a backing service failed while doing something (one line per window).
log_outage = _OutageLog(LOG_WINDOW)
