"""In production (nginx, gunicorn, MariaDB, Redis), /admin/ does not open on a password alone.

``ADMIN_REQUIRE_2FA`` is on by default there: an admin who signs in with the
right password is sent to set up a second factor, and once it is on, every
later sign-in needs a code before any admin page opens.
"""

from __future__ import annotations

import re
import time

import pyotp

from apps.accounts import apikeys
from tests.conftest import CSRF_META, PASSWORD, create_account
from tests.deploy.conftest import Deployment
from tests.deploy.test_nginx import log_in


def post_form(client, base: str, path: str, **data: str):  # type: ignore[no-untyped-def]
    page = client.get(base + path)
    match = CSRF_META.search(page.text)
    assert match, page.text
    return client.post(
        base + path,
        data={"csrf_token": match.group(1), **data},
        headers={"Referer": base + path},
        allow_redirects=False,
    )


def test_an_admin_needs_a_second_factor_before_any_admin_page(deployment: Deployment) -> None:
    with deployment.app_context():
        chief = create_account("chief2fa", is_admin=True)
        _, key = apikeys.create_key(chief, "script")
    client = deployment.session(source="127.0.0.9")
    base = deployment.url
    assert log_in(client, base, "chief2fa", PASSWORD).status_code == 302
    for path in ("/admin/", "/admin/accounts/", "/admin/audit/"):
        answer = client.get(base + path, allow_redirects=False)
        assert answer.status_code == 302, path
        assert answer.headers["Location"].startswith("/accounts/2fa?next=/admin/")

    page = client.get(base + "/accounts/2fa").text
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page)
    assert secret
    totp = pyotp.TOTP(secret.group(1))
    assert post_form(client, base, "/accounts/2fa", code=totp.now()).status_code == 200
    assert client.get(base + "/admin/", allow_redirects=False).status_code == 200

    # In a new browser, the password alone no longer opens anything.
    fresh = deployment.session(source="127.0.0.9")
    assert log_in(fresh, base, "chief2fa", PASSWORD).headers["Location"] == "/accounts/login/2fa"
    assert (
        "/accounts/login" in fresh.get(base + "/admin/", allow_redirects=False).headers["Location"]
    )
    code = totp.at(time.time() + 30)  # the enrolment spent this step's code
    done = post_form(fresh, base, "/accounts/login/2fa", code=code)
    assert done.status_code == 302
    assert fresh.get(base + "/admin/", allow_redirects=False).status_code == 200

    # An admin's API key is one factor too: no admin page for it.
    bearer = deployment.session(source="127.0.0.9")
    assert (
        bearer.get(base + "/admin/", headers={"Authorization": f"Bearer {key}"}).status_code == 403
    )
