"""Work that must not hold up a response: one queue and one worker per process.

A password-reset request has to answer in the same time whether or not the
email belongs to an account. Sending the mail inline, only for real accounts,
made the difference measurable (an SMTP round trip, a token row): an account
list for anyone with a stopwatch. The view hands such work here and answers
at once; the worker runs each job in its own app context, one at a time.

Jobs live in memory: a process killed with jobs queued loses them (a user
asks again); a graceful stop gives the queue :data:`DRAIN_SECONDS` to empty.
The worker starts on first use, so each gunicorn worker (after the fork) gets
its own; under gevent the patched ``threading`` makes it a greenlet.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

from flask import Flask, current_app

from project.lifecycle import on_shutdown
from project.outages import OUTAGES, log_outage

log = logging.getLogger(__name__)

MAX_PENDING = 1000  # jobs waiting at most; past it a job is refused (and logged)
DRAIN_SECONDS = 10.0  # how long a graceful stop waits for queued jobs

Job = Callable[[], object]


class BackgroundQueue:
    """A FIFO of jobs run by one worker thread in an app context of *app*."""

    def __init__(self, app: Flask, max_pending: int = MAX_PENDING) -> None:
        self.app = app
        self._jobs: queue.Queue[tuple[Job, str]] = queue.Queue(max_pending)
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._pid = 0

    def submit(self, job: Job, description: str) -> bool:
        """Queue *job*; False (and a log line) when the queue is full."""
        self._start()
        try:
            self._jobs.put_nowait((job, description))
        except queue.Full:
            log.error("background queue full (%d jobs); dropped: %s", MAX_PENDING, description)
            return False
        return True

    def drain(self, timeout: float = DRAIN_SECONDS) -> bool:
        """Wait until every queued job has run; False if *timeout* passed first."""
        done = threading.Event()
        if not self.submit(done.set, "drain marker"):
            return False
        return done.wait(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._worker is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()  # a forked child has no worker thread: start its own
            self._worker = threading.Thread(target=self._run, name="background", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while True:
            job, description = self._jobs.get()
            try:
                with self.app.app_context():
                    job()
            except OUTAGES as exc:  # expected on a bad day: one line; the user asks again
                log_outage(exc, f"running a background job (dropped: {description})")
            except Exception:  # one failing job must not stop the ones behind it
                log.exception("background job failed: %s", description)


def get_queue(app: Flask | None = None) -> BackgroundQueue:
    """The app's queue in this process, created on first use."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    background: BackgroundQueue | None = app.extensions.get("background")
    if background is None:
        background = app.extensions.setdefault("background", BackgroundQueue(app))
        on_shutdown(background.drain)
    return background


def run_later(job: Job, description: str) -> bool:
    """Run *job* after this response, in an app context of the current app."""
    return get_queue().submit(job, description)
