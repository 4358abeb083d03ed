"""One logged-in page polled in a thread, every answer recorded with its time.

What a user reloading a page sees during a fault: :class:`Poller` GETs a page
(``/accounts/profile``) every ``interval`` seconds on a fresh connection, without
following redirects, and records each answer's status, ``Retry-After`` and
``Location``, or the connection error. When the page sends it to the login
form (the session ended), the poller logs in again as a user would and goes on;
``Account.logins`` says how often that happened.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

import requests

from tests.faults.accounts import Account, LoginFailed


@dataclass(frozen=True)
class Answer:
    started: float  # time.monotonic() when the request went out
    finished: float
    status: int | None  # None: no HTTP answer (connection refused/reset, timeout)
    retry_after: str | None = None
    location: str | None = None
    error: str | None = None


class Poller(threading.Thread):
    """GET ``account.base + path`` every *interval* s as *account* until :meth:`stop`."""

    def __init__(self, account: Account, path: str = "/accounts/profile", interval: float = 0.1):
        super().__init__(name=f"poller-{account.username}", daemon=True)
        self.account, self.path, self.interval = account, path, interval
        self.answers: list[Answer] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            cookie = self.account.cookie
            started = time.monotonic()
            try:
                response = requests.get(
                    self.account.base + self.path,
                    headers={"Cookie": cookie},
                    allow_redirects=False,
                    timeout=10,
                )
            except requests.RequestException as exc:
                self.answers.append(
                    Answer(started, time.monotonic(), None, error=type(exc).__name__)
                )
            else:
                location = response.headers.get("Location")
                self.answers.append(
                    Answer(
                        started,
                        time.monotonic(),
                        response.status_code,
                        response.headers.get("Retry-After"),
                        location,
                    )
                )
                if response.status_code in (302, 401) and "/accounts/login" in (
                    location or "/accounts/login"
                ):
                    # While the outage goes on this fails: the next poll tries again.
                    with contextlib.suppress(LoginFailed, requests.RequestException):
                        self.account.relogin(cookie, deadline=time.monotonic() + 1)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)

    # -- what the checks read ------------------------------------------------------------------

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.started <= end]

    def recovery(self, restored: float) -> float | None:
        """Seconds from *restored* until the first 200 to a request sent at or after it."""
        for answer in self.answers:
            if answer.started >= restored and answer.status == 200:
                return answer.finished - restored
        return None
