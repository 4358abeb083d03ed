"""A logged-in user as a browser is one: a session cookie, and logging in again when it ends.

The deployment runs in production mode, so its session cookie is ``Secure``; a
cookie jar would not send it back over the plain HTTP of these tests, so the
``Cookie`` header is carried by hand (as ``tests/realtime/test_chat.py`` does).
"""

from __future__ import annotations

import re
import threading
import time

import requests

from tests.conftest import PASSWORD

TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


class LoginFailed(Exception):
    """The login form did not log the user in; ``status`` is the last answer's."""

    def __init__(self, message: str, status: int | None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class Account:
    """One user's browser session against *base*; :meth:`relogin` is safe from any thread.

    ``logins`` counts how often the user had to log in (1 after the first); a
    fault that should keep users logged in must leave it at 1. ``statuses`` holds
    ``(time, status)`` of every answer the login form gave, for the fault checks.
    """

    def __init__(self, base: str, username: str) -> None:
        self.base, self.username = base, username
        self.cookie = ""
        self.logins = 0
        self.statuses: list[tuple[float, int, str | None]] = []  # (time, status, Retry-After)
        self._lock = threading.Lock()

    def login(self) -> str:
        """Log in through the real form; returns the new Cookie header. Raises LoginFailed."""
        page = requests.get(self.base + "/accounts/login", timeout=10)
        self._seen(page)
        token = TOKEN.search(page.text)
        if page.status_code != 200 or not token or "csrf" not in page.cookies:
            raise LoginFailed(
                f"login page answered {page.status_code}", page.status_code, _retry_after(page)
            )
        answer = requests.post(
            self.base + "/accounts/login",
            allow_redirects=False,
            timeout=10,
            headers={"Cookie": f"csrf={page.cookies['csrf']}"},  # a visitor's CSRF secret
            data={"csrf_token": token.group(1), "login": self.username, "password": PASSWORD},
        )
        self._seen(answer)
        if answer.status_code != 302 or "session" not in answer.cookies:
            raise LoginFailed(
                f"login answered {answer.status_code}", answer.status_code, _retry_after(answer)
            )
        self.cookie = f"session={answer.cookies['session']}"
        self.logins += 1
        return self.cookie

    def relogin(self, stale: str, deadline: float) -> str:
        """Log in again unless another thread already did since *stale* was the cookie.

        Retries (honouring Retry-After) until *deadline* (a ``time.monotonic()``).
        """
        with self._lock:
            if self.cookie != stale:
                return self.cookie
            while True:
                try:
                    return self.login()
                except (LoginFailed, requests.RequestException) as exc:
                    if time.monotonic() > deadline:
                        raise
                    wait = getattr(exc, "retry_after", None) or 0.5
                    time.sleep(min(wait, 5))

    def _seen(self, response: requests.Response) -> None:
        self.statuses.append(
            (time.monotonic(), response.status_code, response.headers.get("Retry-After"))
        )


def _retry_after(response: requests.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def create_room(account: Account, name: str) -> None:
    """Create chat room *name* through the rooms page, as *account*."""
    headers = {"Cookie": account.cookie}
    page = requests.get(account.base + "/realtime/", headers=headers, timeout=10)
    token = TOKEN.search(page.text)
    assert page.status_code == 200 and token, page.status_code
    answer = requests.post(
        account.base + "/realtime/",
        headers=headers,
        data={"csrf_token": token.group(1), "name": name},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302, (answer.status_code, answer.text[:500])
