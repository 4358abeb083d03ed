"""The accounts pages in a real browser: headless Chromium driven by Playwright.

A newcomer's path end to end: register, log out, log in, change the password;
then an admin finds that user in the list and deactivates them, and the
user's open browser session is refused on its next page.
"""

from __future__ import annotations

import os
import shutil

import pytest
from flask import Flask

from bench.admin_browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import create_account, service_missing


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        service_missing(
            f"Chromium at {CHROMIUM} (Debian package 'chromium'; .ci/run installs it)",
            FileNotFoundError(CHROMIUM),
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def submit(page, fields: dict[str, str], button: str = "main button[type=submit]") -> None:  # type: ignore[no-untyped-def]
    for selector, value in fields.items():
        page.fill(selector, value)
    with page.expect_navigation():
        page.click(button)


def test_register_logout_login_change_password_then_admin_deactivates(
    app: Flask,
    live_server: str,
    browser,  # type: ignore[no-untyped-def]
) -> None:
    with app.app_context():
        create_account("chief", "Admin-Pass-987", is_admin=True)
    user_ctx = browser.new_context()
    page = user_ctx.new_page()

    # Register: a weak password is refused with the reason beside the field.
    page.goto(live_server + "/accounts/register")
    submit(
        page,
        {
            "#username": "newcomer",
            "#email": "newcomer@example.com",
            "#password": "password1",
            "#confirm": "password1",
        },
    )
    assert "too common" in page.inner_text("#password-errors")
    submit(page, {"#password": "Blue-Harbour-71", "#confirm": "Blue-Harbour-71"})
    assert page.url.endswith("/accounts/profile")
    assert "newcomer" in page.inner_text(".nav-user")

    # Log out (a POST form in the navigation), then log in again.
    with page.expect_navigation():
        page.click("text=Log out")
    assert "Log in" in page.inner_text(".nav-user")
    page.goto(live_server + "/accounts/login")
    submit(page, {"#login": "newcomer", "#password": "wrong-password-1"})
    assert "do not match an account" in page.inner_text(".field.has-error")
    submit(page, {"#login": "newcomer", "#password": "Blue-Harbour-71"})
    assert "newcomer" in page.inner_text(".nav-user")

    # Change the password; still logged in afterwards.
    page.goto(live_server + "/accounts/password")
    submit(
        page,
        {
            "#current_password": "Blue-Harbour-71",
            "#new_password": "Green-Valley-93",
            "#confirm": "Green-Valley-93",
        },
    )
    assert "Your password has been changed" in page.inner_text(".flashes")
    assert "newcomer" in page.inner_text(".nav-user")

    # An admin, in another browser, finds the user and deactivates them.
    admin_page = browser.new_context().new_page()
    admin_page.goto(live_server + "/accounts/login?next=/admin/accounts/")
    submit(admin_page, {"#login": "chief", "#password": "Admin-Pass-987"})
    assert admin_page.url.endswith("/admin/accounts/")
    admin_page.fill("input[name=q]", "newc")
    with admin_page.expect_navigation():
        admin_page.click("text=Filter")
    rows = admin_page.locator("tbody tr")
    assert rows.count() == 1 and "newcomer@example.com" in rows.inner_text()
    with admin_page.expect_navigation():
        admin_page.click("tbody >> text=newcomer")
    admin_page.uncheck("#is_active")
    with admin_page.expect_navigation():
        admin_page.click("text=Save")
    assert "newcomer has been updated" in admin_page.inner_text(".flashes")

    # The user's open session is refused at once: the next page is anonymous.
    page.goto(live_server + "/accounts/profile")
    assert "/accounts/login" in page.url
    submit(page, {"#login": "newcomer", "#password": "Green-Valley-93"})
    assert "deactivated" in page.inner_text(".field.has-error")
