"""Account pages through real requests: register, log in and out, profile, keys, sessions, reset.

Every form is submitted as a browser would, with the CSRF token read from a page.
Throttling has its own tests (``test_throttle.py``); here the limits are raised
so that the failed attempts these tests make on purpose never add up to a 429
(nor, while rate-limit counts in Redis are not kept under each app's
``REDIS_KEY_PREFIX``, the attempts other tests make at the same time).
"""

from __future__ import annotations

import html
import re
import secrets
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape

from apps.accounts import apikeys, models
from apps.accounts.forms import MESSAGES
from apps.accounts.passwords import verify_password
from project.background import get_queue
from project.db import utcnow
from project.extensions import db
from project.sessions import session_exists
from tests.conftest import CSRF_META, PASSWORD, Outbox, create_account, csrf_token, log_in

MakeApp = Callable[..., Flask]

#: Limits no test here reaches (the defaults are tested in test_throttle.py).
LIMITS = {
    "LOGIN_LIMIT_ACCOUNT": "1000 per minute",
    "LOGIN_LIMIT_ADDRESS": "1000 per minute",
    "REGISTER_LIMIT": "1000 per minute",
    "RESET_LIMIT": "1000 per minute",
}

NEW_PASSWORD = "Tidal-Lantern-57"
SCRIPT = "<script>alert(1)</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
API_KEY = re.compile(r"fmk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
REVOKE_ACTION = re.compile(r'action="/accounts/profile/keys/(\d+)/revoke"')
RESET_LINK = re.compile(
    r"http://127\.0\.0\.1:5000(/accounts/password/reset/[A-Za-z0-9_-]+)"
)  # SITE_URL
TOKENS = re.compile(r'(name="csrf-token" content="|name="csrf_token" type="hidden" value=")[^"]+')


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app(**LIMITS)


# -- helpers ------------------------------------------------------------------------------------


def page_token(response: Any) -> str:
    """The CSRF token a page carries (every page has it in the layout's meta tag)."""
    match = CSRF_META.search(response.get_data(as_text=True))
    assert match, "the page must carry a CSRF token"
    return match.group(1)


def submit(client: FlaskClient, path: str, form_page: str | None = None, **data: Any) -> Any:
    """Open the page with the form, then post it with the page's token."""
    token = page_token(client.get(form_page or path))
    return client.post(path, data={"csrf_token": token, **data})


def register(client: FlaskClient, **fields: str) -> Any:
    data = {
        "username": "carol",
        "email": "carol@example.com",
        "password": NEW_PASSWORD,
        "confirm": NEW_PASSWORD,
        **fields,
    }
    return submit(client, "/accounts/register", **data)


def errors_of(response: Any, field_id: str) -> list[str]:
    """The error messages listed beside one field of a form."""
    page = response.get_data(as_text=True)
    match = re.search(rf'<ul class="errors" id="{field_id}-errors">(.*?)</ul>', page, re.S)
    if not match:
        return []
    return [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", match.group(1), re.S)]


def whoami(client: FlaskClient) -> str | None:
    user: str | None = client.get("/_probe/whoami").json["user"]  # type: ignore[index]
    return user


def session_id(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None, "the client has no session cookie"
    return cookie.value


def session_stored(app: Flask, sid: str) -> bool:
    """Whether the server still keeps a session with this id (in Redis or the session files)."""
    with app.app_context():
        return session_exists(sid)


def logged_in_client(app: Flask, login: str = "alice", password: str = PASSWORD) -> FlaskClient:
    client = app.test_client()
    response = log_in(client, login, password)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def user_count(app: Flask) -> int:
    with app.app_context():
        return int(db.fetch_value("SELECT COUNT(*) FROM users") or 0)


def user_email(app: Flask, username: str) -> str:
    with app.app_context():
        user = models.get_user_by_login(username)
        assert user is not None
        return user.email


def password_is(app: Flask, username: str, password: str) -> bool:
    with app.app_context():
        user = models.get_user_by_login(username)
        assert user is not None
        return verify_password(models.get_password_hash(user.id), password)


def create_key(client: FlaskClient, label: str = "laptop") -> str:
    response = submit(client, "/accounts/profile/keys", "/accounts/profile", label=label)
    assert response.status_code == 201
    match = API_KEY.search(response.get_data(as_text=True))
    assert match, "the new key must be shown"
    return match.group(0)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sessions_table(client: FlaskClient) -> list[tuple[str, bool]]:
    """The rows of "Where you are logged in": (handle posted by its button, is this browser)."""
    page = client.get("/accounts/profile").get_data(as_text=True)
    table = re.search(r'<table class="table" id="sessions">(.*?)</table>', page, re.S)
    assert table, "the profile page lists the sessions"
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S):
        handle = re.search(r'name="session" value="([0-9a-f]{32})"', row)
        if handle:
            rows.append((handle.group(1), "this browser" in row))
    return rows


# -- register -----------------------------------------------------------------------------------


def test_registering_logs_you_in_and_opens_your_profile(app: Flask) -> None:
    client = app.test_client()
    response = register(client)
    assert response.status_code == 302
    assert response.headers["Location"] == "/accounts/profile"
    page = client.get("/accounts/profile").get_data(as_text=True)
    assert "Welcome, carol! Your account is ready." in page
    assert 'value="carol@example.com"' in page
    assert whoami(client) == "carol"
    assert password_is(app, "carol", NEW_PASSWORD)


def test_the_register_page_sends_a_logged_in_user_to_the_profile(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    response = client.get("/accounts/register")
    assert response.status_code == 302
    assert response.headers["Location"] == "/accounts/profile"


def test_registering_with_nothing_filled_in_marks_every_field(app: Flask) -> None:
    client = app.test_client()
    response = submit(client, "/accounts/register")
    assert response.status_code == 400
    for field in ("username", "email", "password", "confirm"):
        assert errors_of(response, field) == [MESSAGES["required"]], field
    assert 'aria-describedby="username-errors"' in response.get_data(as_text=True)
    assert user_count(app) == 0


USERNAME_LENGTH = "Use between 3 and 150 characters."
REGISTER_ERRORS = [
    ("username with a space", {"username": "carol smith"}, "username", MESSAGES["username_chars"]),
    ("username with markup", {"username": "carol<b>"}, "username", MESSAGES["username_chars"]),
    ("username with a quote", {"username": "o'brien"}, "username", MESSAGES["username_chars"]),
    ("username too short", {"username": "ca"}, "username", USERNAME_LENGTH),
    ("username 151 chars", {"username": "c" * 151}, "username", USERNAME_LENGTH),
    (
        "username taken in another case",
        {"username": "ALICE"},
        "username",
        MESSAGES["username_taken"],
    ),
    ("email taken", {"email": "Alice@Example.com"}, "email", MESSAGES["email_taken"]),
    ("email invalid", {"email": "carol.example.com"}, "email", MESSAGES["email_invalid"]),
    (
        "email 255 chars",
        {"email": "c" * 64 + "@" + "e" * 186 + ".com"},
        "email",
        "Use at most 254 characters.",
    ),
    (
        "password too short",
        {"password": "Tid-57x", "confirm": "Tid-57x"},
        "password",
        "Use at least 8 characters.",
    ),
    (
        "password all digits",
        {"password": "80417365209", "confirm": "80417365209"},
        "password",
        "Use more than digits.",
    ),
    (
        "password common",
        {"password": "password1", "confirm": "password1"},
        "password",
        "This password is too common",
    ),
    (
        "password contains the username",
        {"password": "Carol-Tidal-57", "confirm": "Carol-Tidal-57"},
        "password",
        "Do not use your username or email in the password.",
    ),
    (
        "password contains the email's name",
        {"email": "tidalwave@example.com", "password": "Tidalwave-57", "confirm": "Tidalwave-57"},
        "password",
        "Do not use your username or email in the password.",
    ),
    ("confirm differs", {"confirm": "Tidal-Lantern-58"}, "confirm", MESSAGES["password_mismatch"]),
]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [case[1:] for case in REGISTER_ERRORS],
    ids=[case[0] for case in REGISTER_ERRORS],
)
def test_a_registration_error_is_shown_beside_its_field(
    app: Flask, fields: dict[str, str], field: str, message: str
) -> None:
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    response = register(client, **fields)
    assert response.status_code == 400
    errors = errors_of(response, field)
    assert any(message in error for error in errors), errors
    assert user_count(app) == 1  # only alice
    assert whoami(client) is None


def test_a_150_character_username_is_accepted(app: Flask) -> None:
    client = app.test_client()
    name = "c" * 150
    response = register(client, username=name)
    assert response.status_code == 302
    assert whoami(client) == name


def test_a_150_character_username_that_case_folds_longer_still_registers_and_logs_in(
    app: Flask,
) -> None:
    """ "ß" case-folds to "ss": the name is 150 characters, its lookup key 300."""
    client = app.test_client()
    name = "ß" * 150
    response = register(client, username=name)
    assert response.status_code == 302, response.status_code
    assert whoami(client) == name
    capital = "\u1e9e" * 150  # capital sharp s: the same name in another case
    assert log_in(app.test_client(), capital, NEW_PASSWORD).status_code == 302


def test_usernames_that_differ_by_an_accent_are_different_accounts(app: Flask) -> None:
    """Only case is ignored when names are compared; "josé" is not "jose"."""
    with app.app_context():
        create_account("jose")
    client = app.test_client()
    response = register(client, username="josé", email="jose2@example.com")
    assert response.status_code == 302, errors_of(response, "username")
    assert whoami(client) == "josé"
    assert log_in(app.test_client(), "jose").status_code == 302
    assert log_in(app.test_client(), "JOSÉ", NEW_PASSWORD).status_code == 302


def test_markup_typed_into_the_register_form_is_shown_escaped(app: Flask) -> None:
    client = app.test_client()
    response = register(client, username=SCRIPT, email=f'">{SCRIPT}@example.com')
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert SCRIPT not in page
    assert ESCAPED_SCRIPT in page
    assert errors_of(response, "username") == [MESSAGES["username_chars"]]
    assert errors_of(response, "email") == [MESSAGES["email_invalid"]]


def test_quotes_and_sql_in_an_email_are_stored_literally_and_shown_escaped(app: Flask) -> None:
    client = app.test_client()
    email = "o'brien--@example.com"
    response = register(client, username="obrien", email=email)
    assert response.status_code == 302
    assert user_email(app, "obrien") == email
    page = client.get("/accounts/profile").get_data(as_text=True)
    assert f'value="{escape(email)}"' in page
    assert "o&#39;brien--@example.com" in page
    assert log_in(app.test_client(), "O'Brien--@Example.com", NEW_PASSWORD).status_code == 302


# -- CSRF ---------------------------------------------------------------------------------------


def _csrf_case(app: Flask, action: str) -> tuple[FlaskClient, str, dict[str, str], Callable]:
    """A client ready to post *action*, the form, and a check that nothing changed."""
    with app.app_context():
        create_account("alice")
    if action in ("register", "login"):
        client = app.test_client()
        client.get(f"/accounts/{action}")  # a session with its own token exists
    else:
        client = logged_in_client(app)
    other = logged_in_client(app) if action == "end other sessions" else None

    def no_user_created() -> None:
        assert user_count(app) == 1

    def not_logged_in() -> None:
        assert whoami(client) is None

    def still_logged_in() -> None:
        assert whoami(client) == "alice"

    def email_unchanged() -> None:
        still_logged_in()
        assert user_email(app, "alice") == "alice@example.com"

    def password_unchanged() -> None:
        still_logged_in()
        assert password_is(app, "alice", PASSWORD)

    def no_key_created() -> None:
        still_logged_in()
        with app.app_context():
            assert int(db.fetch_value("SELECT COUNT(*) FROM api_keys") or 0) == 0

    def other_session_kept() -> None:
        still_logged_in()
        assert other is not None and whoami(other) == "alice"

    cases: dict[str, tuple[str, dict[str, str], Callable[[], None]]] = {
        "register": (
            "/accounts/register",
            {
                "username": "carol",
                "email": "carol@example.com",
                "password": NEW_PASSWORD,
                "confirm": NEW_PASSWORD,
            },
            no_user_created,
        ),
        "login": ("/accounts/login", {"login": "alice", "password": PASSWORD}, not_logged_in),
        "logout": ("/accounts/logout", {}, still_logged_in),
        "profile": ("/accounts/profile", {"email": "new@example.com"}, email_unchanged),
        "password": (
            "/accounts/password",
            {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
            password_unchanged,
        ),
        "api key": ("/accounts/profile/keys", {"label": "laptop"}, no_key_created),
        "end other sessions": (
            "/accounts/profile/sessions/end",
            {"session": "others"},
            other_session_kept,
        ),
    }
    path, form, unchanged = cases[action]
    return client, path, form, unchanged


@pytest.mark.parametrize("token", ["missing", "wrong", "from another session"])
@pytest.mark.parametrize(
    "action",
    ["register", "login", "logout", "profile", "password", "api key", "end other sessions"],
)
def test_a_post_without_its_csrf_token_is_refused_and_changes_nothing(
    app: Flask, action: str, token: str
) -> None:
    client, path, form, unchanged = _csrf_case(app, action)
    if token == "wrong":
        form["csrf_token"] = "forged-token"
    elif token == "from another session":
        form["csrf_token"] = csrf_token(app.test_client())
    response = client.post(path, data=form)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "CSRF" in page and "Reload the page and try again." in page
    unchanged()


# -- log in -------------------------------------------------------------------------------------


@pytest.mark.parametrize("login", ["alice", "ALICE", "Alice", "  alice  "])
def test_you_log_in_with_your_username_in_any_case(app: Flask, login: str) -> None:
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    response = log_in(client, login)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert whoami(client) == "alice"
    assert client.get("/accounts/profile").status_code == 200


@pytest.mark.parametrize("login", ["alice@example.com", "Alice@Example.COM"])
def test_you_log_in_with_your_email(app: Flask, login: str) -> None:
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    assert log_in(client, login).status_code == 302
    assert whoami(client) == "alice"


def test_a_username_may_not_contain_an_at_sign(app: Flask) -> None:
    """A login with "@" is an email address, so no username may look like one."""
    response = register(app.test_client(), username="bob@home", email="bob@example.com")
    assert response.status_code == 400
    assert errors_of(response, "username") == [MESSAGES["username_chars"]]
    with app.app_context():
        assert models.get_user_by_login("bob@example.com") is None


def _without_tokens(page: str) -> str:
    return TOKENS.sub(r"\1TOKEN", page)


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    wrong = log_in(client, "alice", "Wrong-Password-1")
    unknown = log_in(client, "mallory", "Wrong-Password-1")
    assert wrong.status_code == unknown.status_code == 401
    assert errors_of(wrong, "password") == [MESSAGES["login_failed"]]
    assert errors_of(unknown, "password") == [MESSAGES["login_failed"]]
    wrong_page = _without_tokens(wrong.get_data(as_text=True)).replace(
        'value="alice"', 'value="LOGIN"'
    )
    unknown_page = _without_tokens(unknown.get_data(as_text=True)).replace(
        'value="mallory"', 'value="LOGIN"'
    )
    assert wrong_page == unknown_page
    assert whoami(client) is None


def test_a_deactivated_user_cannot_log_in_even_with_the_right_password(app: Flask) -> None:
    with app.app_context():
        user_id = create_account("alice")
        models.set_flags(user_id, is_active=False)
    client = app.test_client()
    response = log_in(client, "alice")
    assert response.status_code == 401
    assert errors_of(response, "login") == [MESSAGES["inactive"]]
    assert whoami(client) is None
    assert client.get("/accounts/profile").status_code == 302


def test_a_deactivated_users_open_session_ends_at_once(app: Flask) -> None:
    with app.app_context():
        user_id = create_account("alice")
    client = logged_in_client(app)
    with app.app_context():
        models.set_flags(user_id, is_active=False)
    assert whoami(client) is None


@pytest.mark.parametrize(
    "login", ["' OR '1'='1", "alice' --", "alice'; DROP TABLE users; --", SCRIPT]
)
def test_sql_or_markup_in_the_login_field_is_just_a_failed_login(app: Flask, login: str) -> None:
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    response = log_in(client, login, "' OR '1'='1")
    assert response.status_code == 401
    assert errors_of(response, "password") == [MESSAGES["login_failed"]]
    page = response.get_data(as_text=True)
    assert f'value="{escape(login)}"' in page
    assert SCRIPT not in page
    assert whoami(client) is None
    assert user_count(app) == 1
    assert log_in(client, "alice").status_code == 302


def test_the_login_page_carries_next_into_its_form(app: Flask) -> None:
    page = app.test_client().get("/accounts/login?next=/accounts/profile").get_data(as_text=True)
    assert 'name="next" type="hidden" value="/accounts/profile"' in page


def test_markup_in_next_is_shown_escaped(app: Flask) -> None:
    page = app.test_client().get(f'/accounts/login?next=/x"><{SCRIPT[1:]}').get_data(as_text=True)
    assert SCRIPT not in page
    assert f'value="/x&#34;&gt;{ESCAPED_SCRIPT}"' in page


@pytest.mark.parametrize("target", ["/accounts/profile", "/accounts/profile?tab=keys"])
def test_next_sends_you_back_to_a_page_of_this_site(app: Flask, target: str) -> None:
    with app.app_context():
        create_account("alice")
    response = log_in(app.test_client(), "alice", next=target)
    assert response.status_code == 302
    assert response.headers["Location"] == target


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "///evil.example",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "/accounts\r\nSet-Cookie: x=1",
        "/accounts\nLocation: https://evil.example/",
        "/\tevil.example",
        "evil.example",
    ],
)
def test_next_pointing_off_site_sends_you_home_instead(app: Flask, target: str) -> None:
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    response = log_in(client, "alice", next=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert whoami(client) == "alice"


def test_an_encoded_line_break_in_next_cannot_inject_a_header(app: Flask) -> None:
    """``%0d%0a`` stays percent-encoded: at most a same-site path that does not exist."""
    with app.app_context():
        create_account("alice")
    response = log_in(app.test_client(), "alice", next="/%0d%0aSet-Cookie:x")
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location in ("/", "/%0d%0aSet-Cookie:x")
    assert "\r" not in location and "\n" not in location
    cookies = response.headers.getlist("Set-Cookie")
    assert not any(c.startswith("x") for c in cookies), cookies


# -- the session across log in and out ----------------------------------------------------------


def test_logging_in_gives_a_new_session_id_and_a_new_csrf_token(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    token_before = csrf_token(client)
    assert client.get_cookie("session") is None  # a visitor's token needs no stored session
    planted = "p" * 43  # a session id someone planted in the browser before the login
    client.set_cookie("session", planted)
    assert log_in(client, "alice").status_code == 302
    sid_after = session_id(client)
    assert sid_after != planted
    assert not session_stored(app, planted)
    fixed = app.test_client()
    fixed.set_cookie("session", planted)  # whoever planted or saw the old id
    assert whoami(fixed) is None
    refused = client.post("/accounts/logout", data={"csrf_token": token_before})
    assert refused.status_code == 400
    assert whoami(client) == "alice"
    assert csrf_token(client) != token_before


def test_logout_is_post_only(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    response = client.get("/accounts/logout")
    assert response.status_code == 405
    assert whoami(client) == "alice"


def test_logout_deletes_the_session_on_the_server(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    sid = session_id(client)
    assert session_stored(app, sid)
    response = submit(client, "/accounts/logout", "/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    if app.config["STACK"] == "services":
        key = f"{app.config['REDIS_KEY_PREFIX']}session:{sid}"
        assert not app.extensions["redis"].exists(key), f"{key} is still in Redis"
    assert not session_stored(app, sid)
    assert "You have been logged out." in client.get("/").get_data(as_text=True)
    assert whoami(client) is None


def test_a_session_cookie_replayed_after_logout_is_anonymous(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    sid = session_id(client)
    assert submit(client, "/accounts/logout", "/").status_code == 302
    replay = app.test_client()
    replay.set_cookie("session", sid)
    assert whoami(replay) is None
    response = replay.get("/accounts/profile")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/accounts/login")


@pytest.mark.parametrize(
    "cookie",
    [secrets.token_urlsafe(32), "forged-" + "A" * 40, "../../../etc/passwd", "x" * 4000],
    ids=["random", "forged", "path", "huge"],  # fixed ids: xdist's workers must collect alike
)
def test_a_forged_session_cookie_is_anonymous(app: Flask, cookie: str) -> None:
    with app.app_context():
        create_account("alice")
    logged_in_client(app)  # a real session exists alongside
    client = app.test_client()
    client.set_cookie("session", cookie)
    assert client.get("/").status_code == 200
    assert whoami(client) is None
    assert client.get("/accounts/profile").status_code == 302


# -- profile: email -----------------------------------------------------------------------------


def test_you_change_your_email_and_log_in_with_the_new_one(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    response = submit(client, "/accounts/profile", email="Alice.New@Example.com")
    assert response.status_code == 302
    assert response.headers["Location"] == "/accounts/profile"
    page = client.get("/accounts/profile").get_data(as_text=True)
    assert "Your email address has been updated." in page
    assert user_email(app, "alice") == "alice.new@example.com"
    assert log_in(app.test_client(), "alice.new@example.com").status_code == 302
    assert log_in(app.test_client(), "alice@example.com").status_code == 401


def test_saving_your_own_email_again_is_fine(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    assert submit(client, "/accounts/profile", email="ALICE@example.com").status_code == 302


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("Bob@Example.com", MESSAGES["email_taken"]),
        ("not an email", MESSAGES["email_invalid"]),
        ("", MESSAGES["required"]),
        (f"{SCRIPT}@example.com", MESSAGES["email_invalid"]),
    ],
)
def test_an_email_change_error_is_shown_beside_the_field(
    app: Flask, email: str, message: str
) -> None:
    with app.app_context():
        create_account("alice")
        create_account("bob")
    client = logged_in_client(app)
    response = submit(client, "/accounts/profile", email=email)
    assert response.status_code == 400
    assert message in errors_of(response, "email")
    assert SCRIPT not in response.get_data(as_text=True)
    assert user_email(app, "alice") == "alice@example.com"


# -- profile: API keys --------------------------------------------------------------------------


def test_a_new_api_key_is_shown_once(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    response = submit(client, "/accounts/profile/keys", "/accounts/profile", label="laptop CLI")
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    key = API_KEY.search(page)
    assert key and "it will not be shown again" in page
    later = client.get("/accounts/profile").get_data(as_text=True)
    assert key.group(0) not in later and "fmk_" not in later
    assert "laptop CLI" in later


def test_an_api_key_logs_its_owner_in_without_cookies(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    key = create_key(logged_in_client(app))
    script = app.test_client()
    response = script.get("/accounts/profile", headers=bearer(key))
    assert response.status_code == 200
    assert '<a class="user-name" href="/accounts/profile">alice</a>' in response.get_data(
        as_text=True
    )
    assert script.get("/_probe/whoami", headers=bearer(key)).json == {"user": "alice"}
    assert whoami(script) is None  # nothing was remembered in a session


def test_a_request_with_an_api_key_needs_no_csrf_token(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    key = create_key(logged_in_client(app))
    response = app.test_client().post(
        "/accounts/profile/keys", data={"label": "made by a script"}, headers=bearer(key)
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    "presented",
    [
        "fmk_" + "0" * 16 + "_" + "A" * 43,
        "not-a-key",
        "fmk_",
    ],
)
def test_a_wrong_api_key_is_refused_with_401(app: Flask, presented: str) -> None:
    with app.app_context():
        create_account("alice")
    response = app.test_client().get("/accounts/profile", headers=bearer(presented))
    assert response.status_code == 401


def test_an_api_key_with_a_wrong_secret_is_refused(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    key = create_key(logged_in_client(app))
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert app.test_client().get("/accounts/profile", headers=bearer(tampered)).status_code == 401


def test_a_revoked_api_key_is_refused(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    key = create_key(client)
    key_pk = REVOKE_ACTION.search(client.get("/accounts/profile").get_data(as_text=True))
    assert key_pk
    revoke = f"/accounts/profile/keys/{key_pk.group(1)}/revoke"
    response = submit(client, revoke, "/accounts/profile")
    assert response.status_code == 302
    assert "The API key has been revoked." in client.get("/accounts/profile").get_data(as_text=True)
    assert app.test_client().get("/accounts/profile", headers=bearer(key)).status_code == 401
    assert submit(client, revoke, "/accounts/profile").status_code == 404  # already revoked


def test_you_cannot_revoke_another_users_api_key(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
        create_account("bob")
    bob = logged_in_client(app, "bob")
    key = create_key(bob)
    key_pk = REVOKE_ACTION.search(bob.get("/accounts/profile").get_data(as_text=True))
    assert key_pk
    alice = logged_in_client(app)
    response = submit(alice, f"/accounts/profile/keys/{key_pk.group(1)}/revoke", "/")
    assert response.status_code == 404
    assert app.test_client().get("/_probe/whoami", headers=bearer(key)).json == {"user": "bob"}


def test_an_api_key_label_over_100_characters_is_refused(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    response = submit(client, "/accounts/profile/keys", "/accounts/profile", label="k" * 101)
    assert response.status_code == 400
    assert errors_of(response, "label") == ["Use at most 100 characters."]
    assert "fmk_" not in response.get_data(as_text=True)
    with app.app_context():
        assert int(db.fetch_value("SELECT COUNT(*) FROM api_keys") or 0) == 0


def test_an_api_key_label_is_stored_literally_and_shown_escaped(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    label = f"{SCRIPT}'; DROP TABLE api_keys; --"
    create_key(client, label)
    page = client.get("/accounts/profile").get_data(as_text=True)
    assert SCRIPT not in page
    assert f"<td>{escape(label)}</td>" in page
    with app.app_context():
        assert db.fetch_value("SELECT label FROM api_keys") == label


# -- profile: sessions --------------------------------------------------------------------------


def test_you_see_your_sessions_and_end_another_one(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    laptop = logged_in_client(app)
    phone = logged_in_client(app)
    rows = sessions_table(laptop)
    assert len(rows) == 2
    assert [current for _, current in rows].count(True) == 1
    other = next(handle for handle, current in rows if not current)
    assert f'value="{other}"' not in laptop.get("/").get_data(as_text=True)
    response = submit(laptop, "/accounts/profile/sessions/end", "/accounts/profile", session=other)
    assert response.status_code == 302
    assert "That session has been ended." in laptop.get("/accounts/profile").get_data(as_text=True)
    assert whoami(phone) is None
    assert phone.get("/accounts/profile").status_code == 302
    assert whoami(laptop) == "alice"
    assert len(sessions_table(laptop)) == 1


def test_ending_all_other_sessions_keeps_this_one(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    laptop = logged_in_client(app)
    others = [logged_in_client(app), logged_in_client(app)]
    page = laptop.get("/accounts/profile").get_data(as_text=True)
    assert "End all other sessions" in page
    response = submit(
        laptop, "/accounts/profile/sessions/end", "/accounts/profile", session="others"
    )
    assert response.status_code == 302
    assert "Ended 2 other sessions." in laptop.get("/accounts/profile").get_data(as_text=True)
    assert [whoami(c) for c in others] == [None, None]
    assert whoami(laptop) == "alice"
    assert len(sessions_table(laptop)) == 1


def test_ending_your_own_session_from_the_list_logs_you_out(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    [(handle, current)] = sessions_table(client)
    assert current
    response = submit(client, "/accounts/profile/sessions/end", "/accounts/profile", session=handle)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert whoami(client) is None


def test_you_cannot_end_another_users_session(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
        create_account("bob")
    bob = logged_in_client(app, "bob")
    [(bobs_handle, _)] = sessions_table(bob)
    alice = logged_in_client(app)
    for handle in (bobs_handle, "0" * 32, ""):
        response = submit(alice, "/accounts/profile/sessions/end", "/", session=handle)
        assert response.status_code == 404, handle
    assert whoami(bob) == "bob"


# -- password change ----------------------------------------------------------------------------


def change_password(client: FlaskClient, current: str, new: str, confirm: str | None = None) -> Any:
    return submit(
        client,
        "/accounts/password",
        current_password=current,
        new_password=new,
        confirm=new if confirm is None else confirm,
    )


def test_a_wrong_current_password_is_refused(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    response = change_password(client, "Not-My-Password-9", NEW_PASSWORD)
    assert response.status_code == 400
    assert errors_of(response, "current_password") == [MESSAGES["password_wrong"]]
    assert password_is(app, "alice", PASSWORD)


@pytest.mark.parametrize(
    ("new", "confirm", "field", "message"),
    [
        ("password1", None, "new_password", "This password is too common"),
        ("short-1", None, "new_password", "Use at least 8 characters."),
        ("92741836501", None, "new_password", "Use more than digits."),
        ("Alice-In-Chains-7", None, "new_password", "Do not use your username"),
        (NEW_PASSWORD, "Something-Else-8", "confirm", MESSAGES["password_mismatch"]),
    ],
)
def test_a_weak_new_password_is_refused(
    app: Flask, new: str, confirm: str | None, field: str, message: str
) -> None:
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    response = change_password(client, PASSWORD, new, confirm)
    assert response.status_code == 400
    assert any(message in error for error in errors_of(response, field)), errors_of(response, field)
    assert password_is(app, "alice", PASSWORD)


def test_changing_your_password_keeps_you_here_and_ends_your_other_sessions(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    laptop = logged_in_client(app)
    phone = logged_in_client(app)
    sid_before = session_id(laptop)
    response = change_password(laptop, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 302
    assert response.headers["Location"] == "/accounts/profile"
    page = laptop.get("/accounts/profile").get_data(as_text=True)
    assert "Your password has been changed." in page
    assert whoami(laptop) == "alice"
    assert session_id(laptop) != sid_before
    assert len(sessions_table(laptop)) == 1
    assert whoami(phone) is None
    assert log_in(app.test_client(), "alice", PASSWORD).status_code == 401
    assert log_in(app.test_client(), "alice", NEW_PASSWORD).status_code == 302


# -- password reset -----------------------------------------------------------------------------


@pytest.fixture
def mail_app(make_app: MakeApp, smtp_outbox: Outbox) -> Flask:
    return make_app(**LIMITS, **smtp_outbox.settings)


def request_reset(client: FlaskClient, email: str) -> Any:
    """Ask for a reset link, then wait for the mail that is sent after the answer."""
    response = submit(client, "/accounts/password/reset", email=email)
    assert get_queue(client.application).drain(timeout=30)
    return response


def reset_path(outbox: Outbox) -> str:
    [message] = outbox.messages
    match = RESET_LINK.search(message.get_content())
    assert match, message.get_content()
    return match.group(1)


def test_a_reset_request_emails_one_link(mail_app: Flask, smtp_outbox: Outbox) -> None:
    with mail_app.app_context():
        create_account("alice")
    client = mail_app.test_client()
    response = request_reset(client, "Alice@Example.com")
    assert response.status_code == 302
    assert response.headers["Location"] == "/accounts/login"
    assert len(smtp_outbox.messages) == 1
    message = smtp_outbox.messages[0]
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Reset your password"
    assert "Hello alice," in message.get_content()
    assert reset_path(smtp_outbox).startswith("/accounts/password/reset/")


@pytest.mark.parametrize(
    ("settings", "headers"),
    [
        ({}, {"Host": "evil.example"}),
        ({"TRUSTED_PROXIES": 1}, {"X-Forwarded-Host": "evil.example"}),
    ],
    ids=["host", "forwarded-host"],
)
def test_a_reset_request_for_a_foreign_host_is_refused(
    make_app: MakeApp, smtp_outbox: Outbox, settings: dict[str, Any], headers: dict[str, str]
) -> None:
    """Stops host-header poisoning: a reset asked for with a forged Host (or X-Forwarded-Host
    through a trusted proxy) would have mailed the victim a link to the attacker's server."""
    app = make_app(**LIMITS, **smtp_outbox.settings, **settings)
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    token = page_token(client.get("/accounts/password/reset"))
    response = client.post(
        "/accounts/password/reset",
        data={"csrf_token": token, "email": "alice@example.com"},
        headers=headers,
    )
    assert response.status_code == 400
    assert "does not answer to that host" in response.get_data(as_text=True)
    assert smtp_outbox.messages == []


def test_the_reset_link_is_built_on_site_url_not_on_the_request_host(
    make_app: MakeApp, smtp_outbox: Outbox
) -> None:
    """Stops the emailed link following whichever trusted host the request came to."""
    app = make_app(**LIMITS, **smtp_outbox.settings, SITE_URL="https://accounts.example.com/")
    with app.app_context():
        create_account("alice")
    assert request_reset(app.test_client(), "alice@example.com").status_code == 302
    [message] = smtp_outbox.messages
    assert "https://accounts.example.com/accounts/password/reset/" in message.get_content()
    assert "localhost" not in message.get_content()


def test_a_reset_request_for_an_unknown_email_looks_the_same_and_sends_nothing(
    mail_app: Flask, smtp_outbox: Outbox
) -> None:
    with mail_app.app_context():
        create_account("alice")
    known_client, unknown_client = mail_app.test_client(), mail_app.test_client()
    known = request_reset(known_client, "alice@example.com")
    unknown = request_reset(unknown_client, "nobody@example.com")
    assert unknown.status_code == known.status_code == 302
    assert unknown.headers["Location"] == known.headers["Location"]
    flash = "If an account uses that email, a link to reset its password is on its way."
    assert flash in known_client.get("/accounts/login").get_data(as_text=True)
    assert flash in unknown_client.get("/accounts/login").get_data(as_text=True)
    assert [m["To"] for m in smtp_outbox.messages] == ["alice@example.com"]


def test_a_reset_request_answers_before_any_mail_is_sent(make_app: MakeApp) -> None:
    """Stops account enumeration by timing: the answer for a real account used to wait for
    the SMTP server (and a token insert) while an unknown email answered at once. Here the
    SMTP server holds every message until released, and both answers still come back."""
    import threading

    from aiosmtpd.controller import Controller

    from tests.conftest import free_port

    release, received = threading.Event(), []

    class SlowServer:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            import asyncio

            while not release.is_set():
                await asyncio.sleep(0.05)
            received.append(envelope.rcpt_tos)
            return "250 Message accepted for delivery"

    port = free_port()
    controller = Controller(SlowServer(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        app = make_app(**LIMITS, MAIL_BACKEND="smtp", MAIL_SERVER="127.0.0.1", MAIL_PORT=port)
        with app.app_context():
            create_account("alice")
        known = submit(app.test_client(), "/accounts/password/reset", email="alice@example.com")
        unknown = submit(app.test_client(), "/accounts/password/reset", email="ghost@example.com")
        assert known.status_code == unknown.status_code == 302
        assert received == []  # both answered while the mail server still held the message
        release.set()
        assert get_queue(app).drain(timeout=30)
        assert received == [["alice@example.com"]]
    finally:
        release.set()
        controller.stop()


@pytest.mark.slow
def test_a_failed_reset_mail_is_logged_not_shown(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    """An SMTP outage must not tell the asker (who may not own the account) anything."""
    from tests.conftest import free_port

    app = make_app(**LIMITS, MAIL_BACKEND="smtp", MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port())
    with app.app_context():
        user_id = create_account("alice")
    client = app.test_client()
    response = submit(client, "/accounts/password/reset", email="alice@example.com")
    assert response.status_code == 302
    assert get_queue(app).drain(timeout=60)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(f"password reset email for user {user_id} not sent" in e for e in errors)


def test_a_deactivated_account_gets_no_reset_link(mail_app: Flask, smtp_outbox: Outbox) -> None:
    with mail_app.app_context():
        models.set_flags(create_account("alice"), is_active=False)
    assert request_reset(mail_app.test_client(), "alice@example.com").status_code == 302
    assert smtp_outbox.messages == []


def test_the_reset_link_works_once_and_ends_every_session(
    mail_app: Flask, smtp_outbox: Outbox
) -> None:
    with mail_app.app_context():
        create_account("alice")
    phone = logged_in_client(mail_app)
    request_reset(mail_app.test_client(), "alice@example.com")
    path = reset_path(smtp_outbox)
    browser = mail_app.test_client()
    page = browser.get(path)
    assert page.status_code == 200
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    response = browser.post(
        path,
        data={"csrf_token": page_token(page), "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/accounts/login"
    assert "Your password has been reset." in browser.get("/accounts/login").get_data(as_text=True)
    assert whoami(phone) is None
    assert log_in(mail_app.test_client(), "alice", PASSWORD).status_code == 401
    assert log_in(mail_app.test_client(), "alice", NEW_PASSWORD).status_code == 302
    again = browser.get(path)
    assert again.status_code == 404
    assert "This link is not valid" in again.get_data(as_text=True)
    replay = browser.post(
        path,
        data={"csrf_token": page_token(again), "password": "Other-Pass-99", "confirm": "x"},
    )
    assert replay.status_code == 404
    assert password_is(mail_app, "alice", NEW_PASSWORD)


def test_a_weak_password_on_the_reset_page_is_refused(mail_app: Flask, smtp_outbox: Outbox) -> None:
    with mail_app.app_context():
        create_account("alice")
    request_reset(mail_app.test_client(), "alice@example.com")
    path = reset_path(smtp_outbox)
    browser = mail_app.test_client()
    response = submit(browser, path, password="password1", confirm="password1")
    assert response.status_code == 400
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert any("too common" in e for e in errors_of(response, "password"))
    assert browser.get(path).status_code == 200  # the link is still good
    assert password_is(mail_app, "alice", PASSWORD)


def test_an_expired_reset_link_is_not_valid(mail_app: Flask, smtp_outbox: Outbox) -> None:
    with mail_app.app_context():
        create_account("alice")
    request_reset(mail_app.test_client(), "alice@example.com")
    path = reset_path(smtp_outbox)
    with mail_app.app_context():
        db.execute(
            "UPDATE password_reset_tokens SET expires_at = %s", (utcnow() - timedelta(seconds=1),)
        )
    response = mail_app.test_client().get(path)
    assert response.status_code == 404
    assert "This link is not valid" in response.get_data(as_text=True)


def test_a_reset_link_expires_after_password_reset_seconds(
    make_app: MakeApp, smtp_outbox: Outbox
) -> None:
    app = make_app(**LIMITS, **smtp_outbox.settings, PASSWORD_RESET_SECONDS=1)
    with app.app_context():
        create_account("alice")
    request_reset(app.test_client(), "alice@example.com")
    path = reset_path(smtp_outbox)
    time.sleep(2)
    assert app.test_client().get(path).status_code == 404


def test_a_new_reset_request_voids_the_earlier_link(mail_app: Flask, smtp_outbox: Outbox) -> None:
    with mail_app.app_context():
        create_account("alice")
    request_reset(mail_app.test_client(), "alice@example.com")
    first = reset_path(smtp_outbox)
    smtp_outbox.messages.clear()
    request_reset(mail_app.test_client(), "alice@example.com")
    second = reset_path(smtp_outbox)
    assert mail_app.test_client().get(first).status_code == 404
    assert mail_app.test_client().get(second).status_code == 200


@pytest.mark.parametrize(
    "token", ["not-a-token", secrets.token_urlsafe(32)], ids=["not-a-token", "random"]
)
def test_a_made_up_reset_link_is_not_valid(app: Flask, token: str) -> None:
    response = app.test_client().get(f"/accounts/password/reset/{token}")
    assert response.status_code == 404
    assert "This link is not valid" in response.get_data(as_text=True)


# -- session lifetimes --------------------------------------------------------------------------


def login_cookie(response: Any) -> str:
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert len(cookies) == 1, cookies
    return str(cookies[0])


def test_remember_me_makes_the_cookie_outlive_the_browser(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    remembered = login_cookie(log_in(app.test_client(), "alice", remember="y"))
    assert "Expires=" in remembered
    for_now = login_cookie(log_in(app.test_client(), "alice"))
    assert "Expires=" not in for_now and "Max-Age=" not in for_now


def test_an_idle_session_ends_unless_remembered(make_app: MakeApp) -> None:
    app = make_app(**LIMITS, SESSION_IDLE_SECONDS=1)
    with app.app_context():
        create_account("alice")
    for_now = logged_in_client(app)
    remembered = app.test_client()
    assert log_in(remembered, "alice", remember="y").status_code == 302
    assert whoami(for_now) == whoami(remembered) == "alice"
    time.sleep(2.2)
    assert whoami(for_now) is None
    assert for_now.get("/accounts/profile").status_code == 302
    assert whoami(remembered) == "alice"


def test_a_session_ends_after_its_absolute_lifetime_even_when_busy(make_app: MakeApp) -> None:
    app = make_app(**LIMITS, SESSION_ABSOLUTE_SECONDS=2)
    with app.app_context():
        create_account("alice")
    client = logged_in_client(app)
    deadline = time.monotonic() + 3.2
    while time.monotonic() < deadline:
        whoami(client)
        time.sleep(0.4)
    assert whoami(client) is None


def set_new_password(client: FlaskClient, path: str) -> Any:
    page = client.get(path)
    data = {"csrf_token": page_token(page), "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    return client.post(path, data=data)


def test_a_password_change_voids_open_reset_links(mail_app: Flask, smtp_outbox: Outbox) -> None:
    """Stops a reset link (maybe in an attacker's hands) undoing a later password change."""
    with mail_app.app_context():
        create_account("alice")
    request_reset(mail_app.test_client(), "alice@example.com")
    path = reset_path(smtp_outbox)
    assert change_password(logged_in_client(mail_app), PASSWORD, NEW_PASSWORD).status_code == 302
    assert mail_app.test_client().get(path).status_code == 404
    assert set_new_password(mail_app.test_client(), path).status_code == 404
    assert password_is(mail_app, "alice", NEW_PASSWORD)


def test_an_email_change_voids_open_reset_links(mail_app: Flask, smtp_outbox: Outbox) -> None:
    """Stops a link mailed to the old (perhaps compromised) address working after the change."""
    with mail_app.app_context():
        create_account("alice")
    request_reset(mail_app.test_client(), "alice@example.com")
    path = reset_path(smtp_outbox)
    client = logged_in_client(mail_app)
    assert submit(client, "/accounts/profile", email="new-alice@example.com").status_code == 302
    assert mail_app.test_client().get(path).status_code == 404


def test_after_a_reset_the_api_keys_are_shown_with_one_click_to_revoke_them(
    mail_app: Flask, smtp_outbox: Outbox
) -> None:
    """Stops a reset leaving an intruder's API keys working unseen: the page after the reset
    lists every live key, and one button revokes them all."""
    with mail_app.app_context():
        user_id = create_account("alice")
        _, secret = apikeys.create_key(user_id, "made by someone")
    assert (
        mail_app.test_client()
        .get("/api/transfer/uploads", headers={"Authorization": f"Bearer {secret}"})
        .status_code
        != 401
    )
    request_reset(mail_app.test_client(), "alice@example.com")
    browser = mail_app.test_client()
    done = set_new_password(browser, reset_path(smtp_outbox))
    assert done.status_code == 200
    page = done.get_data(as_text=True)
    assert "made by someone" in page and secret.split("_")[1] in page
    assert done.headers["Cache-Control"] == "no-store"
    grant = re.search(r'name="grant" value="([^"]+)"', page)
    assert grant
    revoked = browser.post(
        "/accounts/password/reset/keys",
        data={"csrf_token": page_token(done), "grant": grant.group(1)},
    )
    assert revoked.status_code == 302 and revoked.headers["Location"] == "/accounts/login"
    assert "1 API key(s) revoked" in browser.get("/accounts/login").get_data(as_text=True)
    assert (
        mail_app.test_client()
        .get("/api/transfer/uploads", headers={"Authorization": f"Bearer {secret}"})
        .status_code
        == 401
    )
    forged = browser.post(
        "/accounts/password/reset/keys",
        data={"csrf_token": page_token(done), "grant": f"{user_id}.forged"},
    )
    assert forged.status_code == 404


def test_logins_past_the_cap_end_the_least_recently_used_session(make_app: MakeApp) -> None:
    """Stops sessions piling up: every login used to add to the user's index (read on every
    request) and nothing pruned it. Past SESSION_MAX_PER_USER the oldest session ends."""
    from project.sessions import index_entries

    app = make_app(SESSION_MAX_PER_USER=3)
    with app.app_context():
        user_id = create_account("alice")
    clients = []
    for _ in range(5):
        clients.append(logged_in_client(app))
    assert [whoami(c) for c in clients] == [None, None, "alice", "alice", "alice"]
    with app.app_context():
        assert len(index_entries(user_id)) == 3


def test_sessions_that_ended_on_their_own_leave_the_index_at_the_next_login(app: Flask) -> None:
    from project.sessions import delete_session, index_entries

    with app.app_context():
        user_id = create_account("alice")
    first = logged_in_client(app)
    with app.app_context():
        delete_session(session_id(first))  # as the store's expiry would
    logged_in_client(app)
    with app.app_context():
        assert session_id(first) not in index_entries(user_id)
        assert len(index_entries(user_id)) == 1
