"""Helpers the accounts tests share: a site built for one test, and browsers on its login page.

After flaskr's ``AuthActions``: the arrange steps tests kept repeating (build
the app with some settings, create accounts, open a browser on the login
page) said once, so that a test shows only what it does and checks.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask

from tests.conftest import CSRF_META, create_account

WRONG = "Wrong-Password-1"


def unique(name: str) -> str:
    """*name* with a random suffix: counts kept by one test never reach another."""
    return f"{name}{uuid.uuid4().hex[:8]}"


class Browser:
    """A browser on the login page: it reads the CSRF token from the page, once per session."""

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()
        self.token: str | None = None

    def log_in(self, login: str, password: str = WRONG) -> Any:
        if self.token is None:
            match = CSRF_META.search(self.client.get("/accounts/login").get_data(as_text=True))
            assert match
            self.token = match.group(1)
        data = {"csrf_token": self.token, "login": login, "password": password}
        response = self.client.post("/accounts/login", data=data)
        if response.status_code == 302:
            self.token = None  # logging in starts a new session with a new token
        return response

    def whoami(self) -> str | None:
        user: str | None = self.client.get("/_probe/whoami").json["user"]  # type: ignore[index]
        return user


@dataclass(frozen=True)
class Site:
    """One test app, with helpers to fill it and to visit it."""

    app: Flask

    def account(self, name: str = "alice") -> str:
        """Create an account (password PASSWORD) under a unique form of *name*; returns it."""
        username = unique(name)
        with self.app.app_context():
            create_account(username)
        return username

    def browser(self) -> Browser:
        return Browser(self.app)


@pytest.fixture
def login_site(make_app: Callable[..., Flask]) -> Callable[..., Site]:
    """Build a :class:`Site` on the current stack with these settings."""

    def build(**settings: Any) -> Site:
        return Site(make_app(**settings))

    return build
