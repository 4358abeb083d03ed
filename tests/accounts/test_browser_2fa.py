"""Two-factor sign-in in a real browser (headless Chromium), codes computed from the shown secret.

An admin with the setting on cannot open /admin/ with the password alone: they
are sent to set up a second factor, scan (here: read) the secret, confirm it
with a code, save the recovery codes, and only then see the admin pages. Then
they sign in again with password and code, a reused code is refused, and a
recovery code works once.
"""

from __future__ import annotations

import time

import pyotp
from flask import Flask

from apps.accounts.twofactor import STEP_SECONDS
from tests.accounts.test_browser import browser, submit  # noqa: F401 - the fixture is used
from tests.conftest import create_account


def log_out(page) -> None:  # type: ignore[no-untyped-def]
    with page.expect_navigation():
        page.click("text=Log out")


def test_an_admin_enrols_then_signs_in_with_codes_and_recovery_codes(
    app: Flask,
    live_server: str,
    browser,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    app.config["ADMIN_REQUIRE_2FA"] = True
    with app.app_context():
        create_account("chief", "Admin-Pass-987", is_admin=True)
    page = browser.new_context().new_page()

    # The password alone leads to the set-up page, not to the admin pages.
    page.goto(live_server + "/accounts/login?next=/admin/accounts/")
    submit(page, {"#login": "chief", "#password": "Admin-Pass-987"})
    assert "/accounts/2fa" in page.url
    assert "need a second factor" in page.inner_text(".flashes")
    assert page.locator("#totp-qr").evaluate("img => img.complete && img.naturalWidth > 0")
    totp = pyotp.TOTP(page.inner_text("#totp-secret").strip())

    submit(page, {"#code": "000000" if totp.now() != "000000" else "111111"})
    assert "not right" in page.inner_text(".field.has-error")
    submit(page, {"#code": totp.now()})
    codes = [c.strip() for c in page.locator("#recovery-codes code").all_inner_texts()]
    assert len(codes) == 10
    with page.expect_navigation():
        page.click("text=I have saved them")
    assert page.url.endswith("/admin/accounts/")
    assert "chief" in page.inner_text("tbody")

    # Sign out; the password is no longer enough: it asks for a code.
    log_out(page)
    page.goto(live_server + "/accounts/login?next=/admin/")
    submit(page, {"#login": "chief", "#password": "Admin-Pass-987"})
    assert page.url.endswith("/accounts/login/2fa")
    next_code = totp.at(time.time() + STEP_SECONDS)  # the enrolment spent this step's code
    submit(page, {"#code": next_code})
    assert page.url.endswith("/admin/")

    # The same code again, on a new sign-in: refused.
    log_out(page)
    page.goto(live_server + "/accounts/login")
    submit(page, {"#login": "chief", "#password": "Admin-Pass-987"})
    submit(page, {"#code": next_code})
    assert "not right, or it has been used" in page.inner_text(".field.has-error")
    page.goto(live_server + "/admin/")
    assert "/accounts/login" in page.url

    # A recovery code signs in once.
    page.goto(live_server + "/accounts/login")
    submit(page, {"#login": "chief", "#password": "Admin-Pass-987"})
    submit(page, {"#code": codes[0]})
    assert "recovery code; 9 left" in page.inner_text(".flashes")
    page.goto(live_server + "/admin/")
    assert page.url.endswith("/admin/")
    log_out(page)
    page.goto(live_server + "/accounts/login")
    submit(page, {"#login": "chief", "#password": "Admin-Pass-987"})
    submit(page, {"#code": codes[0]})
    assert "not right" in page.inner_text(".field.has-error")
