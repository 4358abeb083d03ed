"""Chat in a real browser: two users in two headless Chromium contexts, then a reload."""

from __future__ import annotations

import pytest
from flask import Flask

from apps.realtime import models
from tests.accounts.test_browser import browser, submit  # noqa: F401 - the fixture is used
from tests.conftest import create_account

# make test-fast leaves these out: two Chromium users: seconds each.
pytestmark = pytest.mark.slow


def log_in(context, base: str, username: str):  # type: ignore[no-untyped-def]
    page = context.new_page()
    page.goto(base + "/accounts/login?next=/realtime/rooms/general")
    submit(page, {"#login": username, "#password": "Correct-Horse-42"})
    page.wait_for_selector("#chat-status.ok")
    return page


def send(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#chat-input", text)
    page.press("#chat-input", "Enter")


def test_two_users_chat_and_history_survives_a_reload(
    app: Flask,
    live_server: str,
    browser,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    with app.app_context():
        alice = create_account("alice")
        create_account("bob")
        models.create_room("general", alice)
    alice_page = log_in(browser.new_context(), live_server, "alice")
    bob_page = log_in(browser.new_context(), live_server, "bob")

    alice_page.wait_for_selector("#online li:has-text('bob')")
    send(alice_page, "Hi Bob <img src=x onerror=alert(1)>")
    bob_page.wait_for_selector(".chat-text:has-text('Hi Bob')")
    assert bob_page.inner_text(".chat-message .chat-user") == "alice"
    # Shown as text: the markup is visible, and no element was created from it.
    assert "<img src=x onerror=alert(1)>" in bob_page.inner_text(".chat-text")
    assert bob_page.locator(".chat-log img").count() == 0
    send(bob_page, "Hello Alice")
    alice_page.wait_for_selector(".chat-text:has-text('Hello Alice')")

    bob_page.reload()
    bob_page.wait_for_selector("#chat-status.ok")
    texts = bob_page.locator(".chat-text").all_inner_texts()
    assert texts == ["Hi Bob <img src=x onerror=alert(1)>", "Hello Alice"]


def test_scrolling_to_the_top_loads_older_messages(
    app: Flask,
    live_server: str,
    browser,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    with app.app_context():
        alice = create_account("alice")
        room = models.create_room("general", alice)
        for i in range(80):
            models.add_message(room.id, alice, "alice", f"note {i}")
    page = log_in(browser.new_context(), live_server, "alice")
    page.wait_for_selector(".chat-text:has-text('note 79')")
    assert page.locator(".chat-message").count() == 50
    page.evaluate("document.getElementById('chat-log').scrollTop = 0")
    page.wait_for_selector(".chat-text:text-is('note 0')")
    assert page.locator(".chat-message").count() == 80
    assert page.locator("#load-older").is_hidden()
