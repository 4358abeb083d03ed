"""A file travels through a chat room in real browsers (headless Chromium), verified.

Alice uploads a file from the room (the upload goes through tus with a
progress bar, then is attached), and attaches an older one from her list;
Bob, in the room, downloads both with the right SHA-256; Mallory, who never
joined the room, gets 404 for the same link.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import requests
from flask import Flask

from apps.realtime import models
from tests.accounts.test_browser import browser  # noqa: F401 - the fixture is used
from tests.conftest import create_account
from tests.realtime.test_browser import log_in
from tests.realtime.test_chat import login_cookie
from tests.transfer.conftest import Owner, store_file

pytestmark = pytest.mark.slow  # three Chromium users: seconds


def test_a_file_posted_in_a_room_reaches_a_member_verified_and_no_one_else(
    app: Flask,
    live_server: str,
    tmp_path: Path,
    browser,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    with app.app_context():
        alice = create_account("alice")
        create_account("bob")
        create_account("mallory")
        models.create_room("general", alice)
    older = os.urandom(50_000)
    store_file(app, Owner(alice, "alice", ""), "notes <i>v2</i>.txt", older)
    fresh = tmp_path / "photo.bin"
    fresh.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    fresh_sha256 = hashlib.sha256(fresh.read_bytes()).hexdigest()

    alice_page = log_in(browser.new_context(), live_server, "alice")
    bob_context = browser.new_context(accept_downloads=True)
    bob_page = log_in(bob_context, live_server, "bob")

    # Upload from the room: the progress bar shows, then the file is posted.
    alice_page.click("#attach-button")
    alice_page.set_input_files("#attach-input", str(fresh))
    bob_page.wait_for_selector(".chat-file a:has-text('photo.bin')", timeout=30_000)
    # An older file from the list, with a message.
    alice_page.fill("#chat-input", "and the notes")
    alice_page.click("#attach-button")
    alice_page.click("#attach-list button:has-text('notes <i>v2</i>.txt')")
    bob_page.wait_for_selector(".chat-file a:has-text('notes <i>v2</i>.txt')")
    assert bob_page.locator(".chat-log i").count() == 0  # the name is text, not markup
    assert "and the notes" in bob_page.inner_text(".chat-log")

    # Bob downloads both; the bytes are the bytes.
    for name, expected in (
        ("photo.bin", fresh_sha256),
        ("notes", hashlib.sha256(older).hexdigest()),
    ):
        with bob_page.expect_download() as caught:
            bob_page.click(f".chat-file a:has-text('{name}')")
        saved = caught.value.path()
        assert hashlib.sha256(Path(saved).read_bytes()).hexdigest() == expected
        shown = bob_page.locator(f".chat-file:has-text('{name}') code").get_attribute("title")
        assert shown == expected

    # Mallory never joined #general: the same link is a 404 for her.
    link = bob_page.get_attribute(".chat-file a:has-text('photo.bin')", "href")
    assert link
    cookie = login_cookie(live_server, "mallory")
    refused = requests.get(live_server + link, headers={"Cookie": cookie}, timeout=10)
    assert refused.status_code == 404

    # Alice deletes her message: it goes from Bob's page, and so does his access.
    alice_page.click(".chat-message:has(.chat-file a:has-text('photo.bin')) .chat-delete")
    bob_page.wait_for_selector(".chat-file a:has-text('photo.bin')", state="detached")
    bob_cookie = login_cookie(live_server, "bob")
    assert (
        requests.get(live_server + link, headers={"Cookie": bob_cookie}, timeout=10).status_code
        == 404
    )
