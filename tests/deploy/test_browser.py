"""Chromium through nginx: logging in over HTTPS, and two users chatting over nginx's WebSocket
upgrade (the Origin check, Secure cookies and the socket all see what the browser sent)."""

from __future__ import annotations

import re
import time

import pytest

from apps.realtime import models
from tests.accounts.test_browser import browser, submit  # noqa: F401 - the fixture is used
from tests.conftest import PASSWORD, create_account
from tests.deploy.conftest import Deployment
from tests.realtime.test_browser import log_in, send

# make test-fast leaves these out: Chromium through nginx and gunicorn.
pytestmark = pytest.mark.slow


def test_chromium_logs_in_through_nginx(
    deployment: Deployment,
    browser,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    with deployment.app_context():
        create_account("visitor")
    page = browser.new_context(ignore_https_errors=True).new_page()
    page.goto(deployment.url + "/accounts/login?next=/accounts/profile")
    submit(page, {"#login": "visitor", "#password": PASSWORD})
    assert page.url == deployment.url + "/accounts/profile"
    assert "visitor" in page.inner_text(".nav-user")
    row = page.locator("#sessions tbody tr")
    assert row.count() == 1 and "127.0.0.1" in row.inner_text()
    device = row.locator(".device")
    assert re.fullmatch(r"(Headless)?Chrome \d+ on Linux", device.inner_text())
    assert device.get_attribute("title") == page.evaluate("navigator.userAgent")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["session"]["secure"] and cookies["session"]["httpOnly"]
    stylesheet = [e for e in deployment.nginx.access_log if e[1] == "/static/css/app.css"]
    assert stylesheet and stylesheet[-1][2] in {"200", "304"} and stylesheet[-1][4] == "-"


def test_two_users_chat_through_nginx(
    deployment: Deployment,
    browser,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    with deployment.app_context():
        alice = create_account("alice")
        create_account("bob")
        models.create_room("general", alice)
    alice_page = log_in(browser.new_context(ignore_https_errors=True), deployment.url, "alice")
    bob_page = log_in(browser.new_context(ignore_https_errors=True), deployment.url, "bob")

    alice_page.wait_for_selector("#online li:has-text('bob')")
    send(alice_page, "Hello from behind nginx")
    bob_page.wait_for_selector(".chat-text:has-text('Hello from behind nginx')")
    send(bob_page, "Loud and clear")
    alice_page.wait_for_selector(".chat-text:has-text('Loud and clear')")

    # nginx logs a socket when it closes: each page's went through the upgrade (101).
    alice_page.context.close()
    bob_page.context.close()
    deadline = time.monotonic() + 10
    while len(sockets := upgrades(deployment)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(sockets) >= 2 and {status for _, _, status, *_ in sockets} == {"101"}


def upgrades(deployment: Deployment) -> list[list[str]]:
    return [e for e in deployment.nginx.access_log if e[1].startswith("/ws/rooms/general")]
