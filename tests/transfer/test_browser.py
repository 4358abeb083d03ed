"""The "My files" page in a real browser: tus-js-client uploads, pause, resume, download.

Headless Chromium (Playwright) logs in through the real form and uploads
through the page's file input or a drop on the drop zone, against the test
app served by werkzeug. Uploads the tests pause or interrupt are slowed down
with Chromium's own network throttling, so there is time to do it mid-file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from playwright.sync_api import expect

from apps.transfer import models, storage
from tests.accounts.test_browser import browser, submit  # noqa: F401 - the fixture is used
from tests.conftest import PASSWORD, create_account
from tests.transfer.conftest import files_of, random_file, sha256_of

# make test-fast leaves these out: Chromium uploading real files: seconds each.
pytestmark = pytest.mark.slow

MiB = 1024 * 1024
MAX_FILE_SIZE = 100 * MiB
QUOTA = 150 * MiB
UPLOAD_TIMEOUT = 120_000  # ms; a slow CI machine hashes and fsyncs 64 MiB in well under this


@pytest.fixture
def app(make_app: Any) -> Flask:
    """Small limits, so the refusals can be shown with files a test can make."""
    return make_app(TRANSFER_MAX_FILE_SIZE=MAX_FILE_SIZE, TRANSFER_USER_QUOTA=QUOTA)  # type: ignore[no-any-return]


@pytest.fixture
def user_id(app: Flask) -> int:
    with app.app_context():
        return create_account("alice")


@dataclass
class Dialogs:
    """The page's dialogs as (type, message); each is accepted unless a test queued False."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    answers: list[bool] = field(default_factory=list)

    def handle(self, dialog) -> None:  # type: ignore[no-untyped-def]
        self.seen.append((dialog.type, dialog.message))
        accept = self.answers.pop(0) if self.answers else True
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()


@pytest.fixture
def dialogs() -> Dialogs:
    return Dialogs()


@pytest.fixture
def page(browser, live_server: str, user_id: int, dialogs: Dialogs):  # type: ignore[no-untyped-def]  # noqa: F811
    """Alice's "My files" page, logged in through the form."""
    context = browser.new_context()
    page = context.new_page()
    page.on("dialog", dialogs.handle)
    # Script errors, and anything the CSP blocked (inline script or style), fail the test.
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "console",
        lambda message: "Content Security Policy" in message.text and problems.append(message.text),
    )
    page.goto(live_server + "/accounts/login?next=/transfer/")
    submit(page, {"#login": "alice", "#password": PASSWORD})
    assert page.url == live_server + "/transfer/"
    yield page
    context.close()
    assert problems == []


class Network:
    """The page's network slowed down or cut off, with Chromium's DevTools emulation.

    One emulation for both: Playwright's own ``set_offline`` is a second one,
    and the two overrule each other.
    """

    def __init__(self, page) -> None:  # type: ignore[no-untyped-def]
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.send("Network.enable")

    def emulate(self, upload_bytes_per_second: int, *, offline: bool = False) -> None:
        self.cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": offline,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": upload_bytes_per_second,
            },
        )


@pytest.fixture
def network(page) -> Network:  # type: ignore[no-untyped-def]
    return Network(page)


def upload_row(page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(".upload", has=page.locator(".upload-name", has_text=name))


def file_row(page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(".file-row", has=page.get_by_role("link", name=name, exact=True))


def sent_bytes(row) -> int:  # type: ignore[no-untyped-def]
    return int(row.locator("progress").evaluate("bar => bar.value"))


def wait_until_done(row, size: int) -> None:  # type: ignore[no-untyped-def]
    expect(row).to_have_attribute("data-state", "done", timeout=UPLOAD_TIMEOUT)
    assert row.locator("progress").evaluate("bar => [bar.value, bar.max]") == [size, size]
    expect(row.locator(".upload-percent")).to_have_text("100%")


def listed_sha256(page, name: str) -> str:  # type: ignore[no-untyped-def]
    row = file_row(page, name)
    expect(row.locator(".file-state")).to_have_text("complete", timeout=10_000)
    return row.locator(".sha256").text_content().strip()  # type: ignore[no-any-return]


def drop(page, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Drop *path* on the drop zone, as a file dragged from the desktop would be."""
    page.evaluate(
        "() => { const i = document.createElement('input'); i.type = 'file';"
        " i.id = 'test-drag-source'; i.hidden = true; document.body.append(i); }"
    )
    page.set_input_files("#test-drag-source", str(path))
    page.evaluate(
        "() => { const data = new DataTransfer();"
        " data.items.add(document.getElementById('test-drag-source').files[0]);"
        " const zone = document.getElementById('dropzone');"
        " for (const type of ['dragenter', 'dragover', 'drop'])"
        "   zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true,"
        "     cancelable: true})); document.getElementById('test-drag-source').remove(); }"
    )


def throttled_upload(page, network: Network, path: Path, rate: int, *, dropped: bool = False):  # type: ignore[no-untyped-def]
    """Start uploading *path* at *rate* bytes/s (picked, or dropped on the drop zone); its row."""
    network.emulate(rate)
    if dropped:
        drop(page, path)
    else:
        page.set_input_files("#file-input", str(path))
    return upload_row(page, path.name)


def wait_until_sent(page, more_than: int, **options: Any) -> None:  # type: ignore[no-untyped-def]
    """Wait until the upload's progress bar is past *more_than* bytes."""
    page.wait_for_function(
        f"() => document.querySelector('.upload progress').value > {more_than}", **options
    )


def test_upload_shows_progress_lists_the_sha256_and_downloads_back(
    app: Flask,
    page,
    user_id: int,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "random.bin"
    digest = random_file(path, 20 * MiB)

    page.set_input_files("#file-input", str(path))
    row = upload_row(page, "random.bin")
    wait_until_done(row, 20 * MiB)
    expect(row.locator(".upload-bytes")).to_have_text("20.0 MiB of 20.0 MiB")
    assert listed_sha256(page, "random.bin") == digest
    listed = file_row(page, "random.bin")
    assert listed.locator("td").nth(1).inner_text() == "20.0 MiB"
    assert listed.locator("[title='20,971,520 bytes']").count() == 1
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    listed.get_by_role("button", name="Copy the SHA-256 of random.bin").click()
    expect(listed.locator(".copy-button")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == digest
    expect(page.locator("#quota")).to_contain_text("20.0 MiB of 150.0 MiB used")
    (stored,) = files_of(app, user_id)
    assert stored.complete and stored.sha256 == digest and stored.size == 20 * MiB

    with page.expect_download() as info:
        listed.get_by_role("link", name="Download").click()
    download = info.value
    assert download.suggested_filename == "random.bin"
    assert sha256_of(Path(download.path())) == digest

    # The file's own page: its facts, and a share link that downloads without logging in.
    listed.get_by_role("link", name="Details").click()
    expect(page.locator("h1")).to_have_text("random.bin")
    assert page.locator("#file-sha256").inner_text() == digest
    page.fill("#days", "2")
    with page.expect_navigation():
        page.click("text=Create link")
    link = page.input_value("#new-link")
    assert "share=" in link
    expect(page.locator("#shares .badge")).to_have_text("active")
    response = requests.get(link, timeout=30)  # no session: the link alone
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == digest
    with page.expect_navigation():
        page.click("#shares >> text=Revoke")
    expect(page.locator("#shares .badge")).to_have_text("revoked")
    assert requests.get(link, timeout=30).status_code == 404


def test_pause_then_resume_completes_with_the_right_sha256(
    app: Flask,
    page,
    network: Network,
    user_id: int,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "paused.bin"
    digest = random_file(path, 64 * MiB)
    row = throttled_upload(page, network, path, 16 * MiB)
    wait_until_sent(page, 0, polling="raf")
    row.get_by_role("button", name="Pause").click()
    expect(row).to_have_attribute("data-state", "paused")
    expect(row.locator(".upload-status")).to_have_text("paused")
    sent = sent_bytes(row)
    assert 0 < sent < 64 * MiB
    page.wait_for_timeout(1000)
    assert sent_bytes(row) == sent, "a paused upload must not move"
    (partial,) = files_of(app, user_id)
    assert partial.state == models.UPLOADING and partial.received < 64 * MiB

    row.get_by_role("button", name="Resume").click()
    expect(row.locator(".upload-speed")).to_contain_text("MiB/s", timeout=10_000)
    expect(row.locator(".upload-eta")).to_contain_text("left")
    wait_until_done(row, 64 * MiB)
    assert listed_sha256(page, "paused.bin") == digest
    (stored,) = files_of(app, user_id)
    assert stored.id == partial.id and stored.sha256 == digest


def test_an_upload_cut_by_a_reload_resumes_when_the_file_is_dropped_again(
    app: Flask,
    page,
    network: Network,
    user_id: int,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "interrupted.bin"
    digest = random_file(path, 64 * MiB)
    row = throttled_upload(page, network, path, 16 * MiB, dropped=True)
    wait_until_sent(page, 12 * MiB)  # past the first 8 MiB chunk: the server has kept something
    page.reload()
    listed = file_row(page, "interrupted.bin")
    expect(listed.locator(".file-state")).to_contain_text("resume by dropping the same file again")
    percent = int(listed.locator(".file-state .badge").inner_text().split()[1].rstrip("%"))
    assert 0 < percent < 100
    partial_id = listed.get_attribute("data-file-id")

    drop(page, path)
    wait_until_done(row, 64 * MiB)
    assert listed_sha256(page, "interrupted.bin") == digest
    assert page.locator(".file-row").count() == 1
    (stored,) = files_of(app, user_id)
    assert stored.id == partial_id and stored.sha256 == digest


def test_a_file_name_with_markup_is_shown_as_text(
    app: Flask,
    page,
    dialogs: Dialogs,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    name = "<img src=x onerror=alert(1)>.txt"
    path = tmp_path / name
    digest = random_file(path, 1000)

    page.set_input_files("#file-input", str(path))
    wait_until_done(upload_row(page, name), 1000)
    assert upload_row(page, name).locator(".upload-name").inner_text() == name
    assert listed_sha256(page, name) == digest
    assert page.locator("main img").count() == 0
    file_row(page, name).get_by_role("link", name="Details").click()
    expect(page.locator("h1")).to_have_text(name)
    assert name in page.title()
    assert page.locator("main img").count() == 0

    # Deleting asks first (the question names the file, as text); dismissed, nothing happens.
    dialogs.answers.append(False)
    page.click("main >> text=Delete")
    assert dialogs.seen == [("confirm", f"Delete {name}? Share links to it stop working too.")]
    expect(page.locator("h1")).to_have_text(name)
    with page.expect_navigation():
        page.click("main >> text=Delete")
    assert page.url.endswith("/transfer/")
    expect(page.locator(".flashes")).to_have_text(f"Deleted {name}.")
    assert page.locator(".file-row").count() == 0
    assert page.locator("img").count() == 0
    assert [kind for kind, _ in dialogs.seen] == ["confirm", "confirm"]  # and never an alert


def test_too_large_is_refused_before_starting_and_a_full_quota_is_explained(
    app: Flask,
    page,
    user_id: int,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    huge = tmp_path / "huge.iso"
    with open(huge, "wb") as f:
        f.truncate(MAX_FILE_SIZE + 5 * MiB)  # sparse: only its size is read
    page.set_input_files("#file-input", str(huge))
    row = upload_row(page, "huge.iso")
    expect(row).to_have_attribute("data-state", "refused")
    expect(row.locator(".upload-message")).to_have_text(
        "This file is 105.0 MiB; files may be at most 100.0 MiB."
    )

    with app.app_context():
        for size in (MAX_FILE_SIZE, QUOTA - MAX_FILE_SIZE - 10 * MiB):  # 10 MiB left
            storage.start_upload(user_id, filename="hog.bin", size=size)
    big = tmp_path / "big.bin"
    random_file(big, 20 * MiB)
    page.set_input_files("#file-input", str(big))
    row = upload_row(page, "big.bin")
    expect(row).to_have_attribute("data-state", "failed")
    expect(row.locator(".upload-message")).to_contain_text(
        "Not enough room: this upload needs 20971520 bytes and only 10485760 of your"
    )
    expect(row.get_by_role("button", name="Retry")).to_be_visible()
    row.get_by_role("button", name="Cancel").click()
    expect(row).to_have_attribute("data-state", "cancelled")

    # The reservations are listed as unfinished; their page offers no sharing yet.
    page.reload()
    states = page.locator(".file-state").all_inner_texts()
    assert states == ["uploading, 0%\n— resume by dropping the same file again"] * 2
    page.locator(".file-row").first.get_by_role("link", name="Details").click()
    expect(page.locator("main")).to_contain_text("shared once its upload is complete")
    assert page.locator("#download").count() == 0 and page.locator("#days").count() == 0


def test_cancel_deletes_the_upload_on_the_server(
    app: Flask,
    page,  # type: ignore[no-untyped-def]
    network: Network,
    dialogs: Dialogs,
    user_id: int,
    media: Path,
    tmp_path: Path,
) -> None:
    path = tmp_path / "unwanted.bin"
    random_file(path, 32 * MiB)
    row = throttled_upload(page, network, path, 8 * MiB)
    wait_until_sent(page, 0)
    row.get_by_role("button", name="Cancel").click()
    expect(row).to_have_attribute("data-state", "cancelled")
    expect(row.locator(".upload-status")).to_have_text("cancelled")
    assert dialogs.seen == [
        ("confirm", "Cancel the upload of unwanted.bin? What was sent so far is deleted.")
    ]
    assert files_of(app, user_id) == []
    assert list(media.glob("partial/*")) == []
    row.get_by_role("button", name="Dismiss").click()
    expect(row).to_have_count(0)


def test_a_lost_connection_resumes_when_the_browser_is_back_online(
    app: Flask,
    page,
    network: Network,
    user_id: int,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "flaky.bin"
    digest = random_file(path, 48 * MiB)
    row = throttled_upload(page, network, path, 16 * MiB)
    wait_until_sent(page, 10 * MiB)
    network.emulate(16 * MiB, offline=True)
    expect(row).to_have_attribute("data-state", "failed", timeout=30_000)
    expect(row.locator(".upload-message")).to_contain_text("The connection to the server was lost")
    network.emulate(16 * MiB)  # back online: the "online" event resumes it
    wait_until_done(row, 48 * MiB)
    assert listed_sha256(page, "flaky.bin") == digest


def test_a_refused_csrf_token_is_renewed_and_the_upload_goes_on(
    app: Flask,
    page,
    live_server: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """What a page open longer than WTF_CSRF_TIME_LIMIT meets: a 400, a new token, a retry."""
    path = tmp_path / "late.bin"
    digest = random_file(path, 1000)

    def stale_page(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.resource_type != "document":
            route.continue_()  # the script's own fetch of the page gets the real token
            return
        response = route.fetch()
        html = re.sub(r'(<meta name="csrf-token" content=")[^"]+', r"\1stale", response.text())
        route.fulfill(response=response, body=html)

    page.route(live_server + "/transfer/", stale_page)
    page.reload()
    assert page.get_attribute("meta[name=csrf-token]", "content") == "stale"
    creations: list[int] = []
    page.on(
        "response",
        lambda r: r.request.method == "POST" and "/api/" in r.url and creations.append(r.status),
    )
    page.set_input_files("#file-input", str(path))
    wait_until_done(upload_row(page, "late.bin"), 1000)
    assert creations == [400, 201]
    assert listed_sha256(page, "late.bin") == digest
