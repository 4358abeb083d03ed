"""Two-factor pages through the test client, on both stacks: enrol, sign in, step up, admin gate."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient

from apps.accounts import apikeys, twofactor
from project.extensions import db
from tests.conftest import PASSWORD, create_account, csrf_token, log_in

STEP = twofactor.STEP_SECONDS
SECRET_TEXT = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
RECOVERY = re.compile(r"<li><code>([a-z]{5}-[0-9]{5})</code></li>")


def code(secret: str, steps_ahead: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + steps_ahead * STEP)


def whoami(client: FlaskClient) -> str | None:
    return client.get("/_probe/whoami").json["user"]  # type: ignore[index,no-any-return]


def post(client: FlaskClient, path: str, **data: Any) -> Any:
    return client.post(path, data={"csrf_token": csrf_token(client), **data})


def enrol(client: FlaskClient) -> tuple[str, list[str]]:
    """Turn the logged-in user's second factor on through the pages; (secret, recovery codes)."""
    page = client.get("/accounts/2fa").get_data(as_text=True)
    match = SECRET_TEXT.search(page)
    assert match, "the enrolment page shows the secret as text"
    assert 'src="data:image/svg+xml' in page  # and as a QR code
    secret = match.group(1)
    done = post(client, "/accounts/2fa", code=code(secret, -1))
    assert done.status_code == 200, done.get_data(as_text=True)
    assert done.headers["Cache-Control"] == "no-store"
    codes = RECOVERY.findall(done.get_data(as_text=True))
    assert len(codes) == 10
    return secret, codes


def second_step(client: FlaskClient, value: str, **extra: str) -> Any:
    return post(client, "/accounts/login/2fa", code=value, **extra)


def audit_actions(user_id: int) -> list[str]:
    rows = db.fetch_all(
        "SELECT action FROM audit_log WHERE target_user_id = %s ORDER BY id", (user_id,)
    )
    return [r["action"] for r in rows]


@pytest.fixture
def alice(app: Flask, client: FlaskClient) -> tuple[int, str, list[str]]:
    """alice, logged in on *client* and enrolled; then logged out. (id, secret, codes)"""
    with app.app_context():
        user_id = create_account("alice")
    log_in(client, "alice")
    secret, codes = enrol(client)
    post(client, "/accounts/logout")
    assert whoami(client) is None
    return user_id, secret, codes


def test_a_right_password_alone_does_not_log_in(
    app: Flask, client: FlaskClient, alice: tuple[int, str, list[str]]
) -> None:
    response = log_in(client, "alice", next="/transfer/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/accounts/login/2fa"
    assert whoami(client) is None
    assert client.get("/accounts/profile").status_code == 302

    wrong = second_step(client, "000000" if code(alice[1], 1) != "000000" else "111111")
    assert wrong.status_code == 401
    assert "That code is not right" in wrong.get_data(as_text=True)
    assert whoami(client) is None

    right = second_step(client, code(alice[1], 1))
    assert right.status_code == 302 and right.headers["Location"] == "/transfer/"
    assert whoami(client) == "alice"
    with app.app_context():
        assert "2fa.enable" in audit_actions(alice[0])
        assert "2fa.failed" in audit_actions(alice[0])


def test_an_accepted_code_is_refused_the_next_time(
    client: FlaskClient, alice: tuple[int, str, list[str]]
) -> None:
    used = code(alice[1], 1)
    log_in(client, "alice")
    assert second_step(client, used).status_code == 302
    post(client, "/accounts/logout")
    log_in(client, "alice")
    assert second_step(client, used).status_code == 401
    assert whoami(client) is None


def test_a_recovery_code_signs_in_once_and_is_audited(
    app: Flask, client: FlaskClient, alice: tuple[int, str, list[str]]
) -> None:
    log_in(client, "alice")
    response = second_step(client, alice[2][3])
    assert response.status_code == 302 and whoami(client) == "alice"
    assert "9 left" in client.get("/").get_data(as_text=True)
    post(client, "/accounts/logout")
    log_in(client, "alice")
    assert second_step(client, alice[2][3]).status_code == 401
    with app.app_context():
        assert audit_actions(alice[0]).count("2fa.recovery_used") == 1


def test_keep_me_logged_in_applies_after_the_second_step(
    client: FlaskClient, alice: tuple[int, str, list[str]]
) -> None:
    def session_cookie(response: Any) -> str:
        cookies = response.headers.getlist("Set-Cookie")
        return next(c for c in cookies if c.startswith("session="))

    log_in(client, "alice")
    assert "Expires=" not in session_cookie(second_step(client, code(alice[1], 1)))
    post(client, "/accounts/logout")
    log_in(client, "alice", remember="y")
    assert "Expires=" in session_cookie(second_step(client, alice[2][0]))


def test_the_second_step_expires_and_cannot_be_reached_without_a_password(
    client: FlaskClient, alice: tuple[int, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert client.get("/accounts/login/2fa").headers["Location"] == "/accounts/login"
    log_in(client, "alice")
    later = time.time() + 301
    monkeypatch.setattr("apps.accounts.twofactor_views.time.time", lambda: later)
    response = second_step(client, code(alice[1], 1))
    assert response.status_code == 302 and response.headers["Location"] == "/accounts/login"
    monkeypatch.undo()
    assert whoami(client) is None


def test_wrong_codes_are_throttled_like_passwords(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(LOGIN_LIMIT_ACCOUNT="3 per minute", LOGIN_LIMIT_ADDRESS="50 per minute")
    client = app.test_client()
    with app.app_context():
        create_account("alice")
    log_in(client, "alice")
    secret, _ = enrol(client)
    post(client, "/accounts/logout")
    log_in(client, "alice")
    for _ in range(3):
        assert second_step(client, "abcde-00000").status_code == 401
    throttled = second_step(client, code(secret, 1))  # even the right one, for now
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert "Too many attempts" in throttled.get_data(as_text=True)
    assert whoami(client) is None


def test_enrolment_needs_a_right_code_and_ends_other_sessions(
    app: Flask, client: FlaskClient
) -> None:
    with app.app_context():
        create_account("alice")
    other = app.test_client()
    log_in(other, "alice")
    log_in(client, "alice")
    page = client.get("/accounts/2fa").get_data(as_text=True)
    secret = SECRET_TEXT.search(page).group(1)  # type: ignore[union-attr]
    assert post(client, "/accounts/2fa", code="12345").status_code == 400
    assert post(client, "/accounts/2fa", code="").status_code == 400
    too_long = post(client, "/accounts/2fa", code="1" * 21)
    assert too_long.status_code == 400
    assert "Enter the 6 digits" in too_long.get_data(as_text=True)
    no_csrf = client.post("/accounts/2fa", data={"code": code(secret)})
    assert no_csrf.status_code == 400
    with app.app_context():
        assert not twofactor.is_enrolled(int(db.fetch_value("SELECT id FROM users")))
    assert whoami(other) == "alice"
    assert re.search(
        r'id="second-factor">off\b', client.get("/accounts/profile").get_data(as_text=True)
    )
    assert post(client, "/accounts/2fa", code=code(secret)).status_code == 200
    assert whoami(other) is None  # it signed in with the password alone
    assert whoami(client) == "alice"
    assert "Turn off" in client.get("/accounts/2fa").get_data(as_text=True)
    profile = client.get("/accounts/profile").get_data(as_text=True)
    assert re.search(r'id="second-factor">on\b', profile)


def test_turning_it_off_needs_the_password_and_a_code(
    app: Flask, client: FlaskClient, alice: tuple[int, str, list[str]]
) -> None:
    log_in(client, "alice")
    second_step(client, code(alice[1], 1))
    wrong_password = post(client, "/accounts/2fa/disable", password="nope", code=alice[2][0])
    assert wrong_password.status_code == 400
    assert "current password is not correct" in wrong_password.get_data(as_text=True)
    assert (
        post(client, "/accounts/2fa/disable", password=PASSWORD, code="000000").status_code == 400
    )
    done = post(client, "/accounts/2fa/disable", password=PASSWORD, code=alice[2][1])
    assert done.status_code == 302
    with app.app_context():
        assert not twofactor.is_enrolled(alice[0])
        assert "2fa.disable" in audit_actions(alice[0])
    post(client, "/accounts/logout")
    assert log_in(client, "alice").headers["Location"] == "/"  # the password alone again


def test_new_recovery_codes_replace_the_old_ones(
    client: FlaskClient, alice: tuple[int, str, list[str]]
) -> None:
    log_in(client, "alice")
    second_step(client, code(alice[1], 1))
    response = post(client, "/accounts/2fa/recovery-codes", code=alice[2][0])
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    fresh = RECOVERY.findall(response.get_data(as_text=True))
    assert len(fresh) == 10 and not set(fresh) & set(alice[2])
    post(client, "/accounts/logout")
    log_in(client, "alice")
    assert second_step(client, alice[2][5]).status_code == 401
    assert second_step(client, fresh[5]).status_code == 302


def test_sensitive_actions_ask_for_a_fresh_code(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(TWO_FACTOR_FRESH_SECONDS=0)
    client = app.test_client()
    with app.app_context():
        user_id = create_account("alice")
    log_in(client, "alice")
    secret, codes = enrol(client)
    time.sleep(1.1)  # the code given at enrolment is now older than the limit
    asked = post(client, "/accounts/profile/keys", label="laptop")
    assert asked.status_code == 302
    assert asked.headers["Location"] == "/accounts/login/2fa?next=/accounts/profile"
    asked = post(client, "/accounts/profile", email="new@example.com")
    assert asked.headers["Location"].startswith("/accounts/login/2fa")
    with app.app_context():
        assert apikeys.list_keys(user_id) == []
        assert db.fetch_value("SELECT email FROM users WHERE id = %s", (user_id,)) != (
            "new@example.com"
        )
    back = second_step(client, code(secret, 1), next="/accounts/profile")
    assert back.headers["Location"] == "/accounts/profile"

    app.config["TWO_FACTOR_FRESH_SECONDS"] = 900  # the code just given counts
    assert post(client, "/accounts/profile/keys", label="laptop").status_code == 201
    assert codes


def test_an_api_key_cannot_do_what_needs_a_code(
    app: Flask, client: FlaskClient, alice: tuple[int, str, list[str]]
) -> None:
    with app.app_context():
        _, key = apikeys.create_key(alice[0], "script")
    response = client.post(
        "/accounts/profile/keys",
        data={"label": "another"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code in (400, 403)
    with app.app_context():
        assert len(apikeys.list_keys(alice[0])) == 1


# -- admins ------------------------------------------------------------------------------------


@pytest.fixture
def gated(make_app: Callable[..., Flask]) -> Flask:
    app = make_app(ADMIN_REQUIRE_2FA=True)
    with app.app_context():
        create_account("chief", is_admin=True)
        create_account("alice")
    return app


def test_an_admin_without_a_second_factor_is_sent_to_set_one_up(gated: Flask) -> None:
    client = gated.test_client()
    log_in(client, "chief")
    response = client.get("/admin/accounts/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/accounts/2fa?next=/admin/accounts/"
    for path in ("/admin/", "/admin/audit/"):
        assert client.get(path).status_code == 302
    assert client.post("/admin/accounts/bulk", data={}).status_code in (302, 400)

    page = client.get("/accounts/2fa?next=/admin/accounts/").get_data(as_text=True)
    secret = SECRET_TEXT.search(page).group(1)  # type: ignore[union-attr]
    done = post(client, "/accounts/2fa?next=/admin/accounts/", code=code(secret))
    assert 'href="/admin/accounts/"' in done.get_data(as_text=True)
    assert client.get("/admin/accounts/").status_code == 200


def test_an_admin_signs_in_with_a_code_before_the_admin_pages_open(gated: Flask) -> None:
    client = gated.test_client()
    log_in(client, "chief")
    secret, _ = enrol(client)
    post(client, "/accounts/logout")
    log_in(client, "chief", next="/admin/")
    assert client.get("/admin/").status_code == 302  # not logged in yet
    assert second_step(client, code(secret, 1)).headers["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_an_admins_api_key_does_not_open_the_admin_pages(gated: Flask) -> None:
    with gated.app_context():
        chief = int(db.fetch_value("SELECT id FROM users WHERE username = 'chief'"))
        _, key = apikeys.create_key(chief, "script")
    client = gated.test_client()
    assert client.get("/admin/", headers={"Authorization": f"Bearer {key}"}).status_code == 403


def test_without_the_setting_admins_are_not_asked(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        create_account("chief", is_admin=True)
    log_in(client, "chief")
    assert client.get("/admin/").status_code == 200


def test_an_admin_removes_a_users_second_factor_and_their_sessions_end(gated: Flask) -> None:
    user = gated.test_client()
    log_in(user, "alice")
    enrol(user)
    admin = gated.test_client()
    log_in(admin, "chief")
    admin_secret, _ = enrol(admin)
    with gated.app_context():
        alice_id = int(db.fetch_value("SELECT id FROM users WHERE username = 'alice'"))
    detail = admin.get(f"/admin/accounts/{alice_id}").get_data(as_text=True)
    assert "Remove second factor" in detail
    response = post(admin, f"/admin/accounts/{alice_id}/two-factor/reset")
    assert response.status_code == 302
    assert whoami(user) is None
    with gated.app_context():
        assert not twofactor.is_enrolled(alice_id)
        rows = db.fetch_all(
            "SELECT action, actor_id FROM audit_log WHERE target_user_id = %s", (alice_id,)
        )
        assert any(r["action"] == "2fa.reset" and r["actor_id"] is not None for r in rows)
    assert log_in(user, "alice").headers["Location"] == "/"
    assert admin_secret


def test_manage_py_twofactor_reset(app: Flask, client: FlaskClient, alice: Any) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["twofactor", "reset", "alice"])
    assert result.exit_code == 0, result.output
    assert "Second factor removed for 'alice'" in result.output
    again = runner.invoke(args=["twofactor", "reset", "alice"])
    assert again.exit_code == 1 and "has no second factor" in again.output
    unknown = runner.invoke(args=["twofactor", "reset", "nobody"])
    assert unknown.exit_code == 2 and "no user 'nobody'" in unknown.output
    with app.app_context():
        assert audit_actions(alice[0]).count("2fa.reset") == 1
    assert log_in(client, "alice").headers["Location"] == "/"
