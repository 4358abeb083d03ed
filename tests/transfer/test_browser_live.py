"""The "My files" page hears uploads it did not start: a CLI push arriving live, in Chromium.

The page is open in headless Chromium (Playwright), logged in through the
form; the real CLI pushes a file over the TCP fast path to the app's
transfer server, through a relay that slows it to a few MB/s so the push
takes seconds. Both servers run in the test process, so this works on both
stacks; across processes the events need Redis (tests/transfer/test_live_cluster.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import expect

from apps.accounts import apikeys
from tests.accounts.test_browser import browser  # noqa: F401 - the fixture is used
from tests.transfer.conftest import random_file, start_cli
from tests.transfer.test_browser import (  # noqa: F401 - fixtures used
    app,
    dialogs,
    file_row,
    listed_sha256,
    page,
    sent_bytes,
    upload_row,
    user_id,
)
from tests.transfer.test_cli import relay
from tests.transfer.test_tcp import running

# make test-fast leaves these out: Chromium watching a real push: seconds each.
pytestmark = pytest.mark.slow

MiB = 1024 * 1024


def test_a_cli_push_shows_up_live_then_in_the_list_without_a_reload(
    app: Flask,  # noqa: F811
    page,  # type: ignore[no-untyped-def]  # noqa: F811
    user_id: int,  # noqa: F811
    tmp_path: Path,
) -> None:
    with app.app_context():
        _, key = apikeys.create_key(user_id, "laptop")
    source = tmp_path / "from the laptop.iso"
    size = 24 * MiB
    digest = random_file(source, size)
    expect(page.locator("#no-files")).to_be_visible()
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    time.sleep(0.5)  # the page's socket opens after load; a push before that is not heard

    with running(app) as server, relay(server.port, rate=8 * MiB) as slow:
        push = start_cli(
            tmp_path, key, "push", str(source), f"--server=127.0.0.1:{slow.port}", "-q",
            capture=True,
        )  # fmt: skip
        row = upload_row(page, source.name)
        expect(row).to_have_attribute("data-state", "uploading", timeout=15_000)
        expect(row.locator(".upload-status")).to_have_text("arriving from elsewhere…")
        expect(row.locator(".upload-pause")).to_be_hidden()  # not this page's to pause
        first = sent_bytes(row)
        assert first < size
        deadline = time.monotonic() + 15
        while sent_bytes(row) <= first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first < sent_bytes(row), "the bar did not move"
        expect(row).to_have_attribute("data-state", "done", timeout=60_000)
        out, err = push.communicate(timeout=60)
        assert push.returncode == 0, err

    file_id = out.strip()
    assert row.locator("progress").evaluate("bar => [bar.value, bar.max]") == [size, size]
    expect(file_row(page, source.name)).to_have_attribute("data-file-id", file_id, timeout=10_000)
    assert listed_sha256(page, source.name) == digest
    assert page.evaluate("window.sameDocument") is True  # no reload
    row.locator(".upload-cancel").click()  # "Dismiss"
    expect(row).to_have_count(0)
