"""Login throttling: failed attempts per account and per address, then a 429 with the wait.

The windows are shortened to seconds so a test can watch one close. Each test
uses names of its own, so attempts counted by one test never reach another.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask

from apps.accounts.forms import MESSAGES
from tests.conftest import CSRF_META, PASSWORD, create_account

MakeApp = Callable[..., Flask]

THROTTLED = "Too many attempts. Try again in"
WRONG = "Wrong-Password-1"
#: Windows long enough that no test outlasts them; the short ones are for watching one close.
ACCOUNT_LIMIT = {"LOGIN_LIMIT_ACCOUNT": "3 per minute", "LOGIN_LIMIT_ADDRESS": "500 per minute"}
SHORT_ACCOUNT_LIMIT = {
    "LOGIN_LIMIT_ACCOUNT": "3 per 2 seconds",
    "LOGIN_LIMIT_ADDRESS": "500 per minute",
}
ADDRESS_LIMIT = {"LOGIN_LIMIT_ACCOUNT": "100 per minute", "LOGIN_LIMIT_ADDRESS": "4 per 2 seconds"}


class Browser:
    """A browser on the login page: it reads the CSRF token from the page, once per session."""

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()
        self.token: str | None = None

    def log_in(self, login: str, password: str = WRONG) -> Any:
        if self.token is None:
            match = CSRF_META.search(self.client.get("/accounts/login").get_data(as_text=True))
            assert match
            self.token = match.group(1)
        data = {"csrf_token": self.token, "login": login, "password": password}
        response = self.client.post("/accounts/login", data=data)
        if response.status_code == 302:
            self.token = None  # logging in starts a new session with a new token
        return response

    def whoami(self) -> str | None:
        user: str | None = self.client.get("/_probe/whoami").json["user"]  # type: ignore[index]
        return user


def alert(response: Any) -> str:
    match = re.search(r'<p class="alert alert-error" role="alert">(.*?)</p>', response.text)
    assert match, "the page shows no alert"
    return match.group(1)


def assert_throttled(response: Any, window: int = 60) -> None:
    assert response.status_code == 429
    assert alert(response).startswith(THROTTLED)
    assert 0 < int(response.headers["Retry-After"]) <= window + 1
    assert 'name="login"' in response.text  # the login form again, not a bare error page


def unique(name: str) -> str:
    return f"{name}{uuid.uuid4().hex[:8]}"


def test_three_failures_lock_the_account_even_for_the_right_password(make_app: MakeApp) -> None:
    app = make_app(**ACCOUNT_LIMIT)
    name = unique("alice")
    with app.app_context():
        create_account(name)
    browser = Browser(app)
    for _ in range(3):
        response = browser.log_in(name)
        assert response.status_code == 401
        assert MESSAGES["login_failed"] in response.text
    assert_throttled(browser.log_in(name, PASSWORD))
    assert browser.whoami() is None
    assert_throttled(Browser(app).log_in(name.upper(), PASSWORD))  # any case, any browser


def test_an_unknown_username_is_throttled_the_same_way(make_app: MakeApp) -> None:
    app = make_app(**ACCOUNT_LIMIT)
    real, ghost = unique("alice"), unique("ghost")
    with app.app_context():
        create_account(real)
    browser = Browser(app)
    real_answers = [browser.log_in(real) for _ in range(4)]
    ghost_answers = [browser.log_in(ghost) for _ in range(4)]
    assert [r.status_code for r in real_answers] == [401, 401, 401, 429]
    assert [r.status_code for r in ghost_answers] == [401, 401, 401, 429]
    ghost = ghost_answers[-1]
    assert_throttled(ghost)
    # The same words; only the minutes may differ by the second that passed in between.
    same = [re.sub(r"\d+ minutes?", "N minutes", alert(r)) for r in (real_answers[-1], ghost)]
    assert same[0] == same[1]


def test_another_account_from_the_same_address_is_not_throttled(make_app: MakeApp) -> None:
    app = make_app(**ACCOUNT_LIMIT)
    alice, bob = unique("alice"), unique("bob")
    with app.app_context():
        create_account(alice)
        create_account(bob)
    browser = Browser(app)
    for _ in range(3):
        browser.log_in(alice)
    assert browser.log_in(alice, PASSWORD).status_code == 429
    assert browser.log_in(bob).status_code == 401
    assert browser.log_in(bob, PASSWORD).status_code == 302
    assert browser.whoami() == bob


def test_successful_logins_do_not_count(make_app: MakeApp) -> None:
    app = make_app(**ACCOUNT_LIMIT)
    name = unique("alice")
    with app.app_context():
        create_account(name)
    browser = Browser(app)
    assert browser.log_in(name).status_code == 401
    assert browser.log_in(name).status_code == 401
    for _ in range(4):
        assert browser.log_in(name, PASSWORD).status_code == 302
    # This browser now has a device cookie: a stranger's failure is the account's third.
    stranger = Browser(app)
    assert stranger.log_in(name).status_code == 401  # the third failure, not the seventh attempt
    assert_throttled(stranger.log_in(name, PASSWORD))


@pytest.mark.slow
def test_the_account_opens_again_when_the_window_has_passed(make_app: MakeApp) -> None:
    app = make_app(**SHORT_ACCOUNT_LIMIT)
    name = unique("alice")
    with app.app_context():
        create_account(name)
    browser = Browser(app)
    for _ in range(3):
        assert browser.log_in(name).status_code == 401
    response = browser.log_in(name, PASSWORD)
    assert response.status_code == 429
    assert alert(response).startswith(THROTTLED)
    assert "Retry-After" in response.headers
    time.sleep(2.5)
    assert browser.log_in(name, PASSWORD).status_code == 302
    assert browser.whoami() == name


def test_failures_across_usernames_lock_the_address(make_app: MakeApp) -> None:
    app = make_app(**ADDRESS_LIMIT)
    alice = unique("alice")
    with app.app_context():
        create_account(alice)
    browser = Browser(app)
    for _ in range(4):
        assert browser.log_in(unique("guess")).status_code == 401
    assert browser.log_in(alice, PASSWORD).status_code == 429
    response = Browser(app).log_in(unique("other"))  # same address, another browser
    assert response.status_code == 429
    assert alert(response).startswith(THROTTLED)


@pytest.mark.slow
def test_the_address_opens_again_when_the_window_has_passed(make_app: MakeApp) -> None:
    app = make_app(**ADDRESS_LIMIT)
    alice = unique("alice")
    with app.app_context():
        create_account(alice)
    browser = Browser(app)
    for _ in range(4):
        browser.log_in(unique("guess"))
    assert browser.log_in(alice, PASSWORD).status_code == 429
    time.sleep(2.5)
    assert browser.log_in(alice, PASSWORD).status_code == 302


def test_the_throttled_message_gives_the_wait_in_minutes(make_app: MakeApp) -> None:
    app = make_app(LOGIN_LIMIT_ACCOUNT="2 per hour", LOGIN_LIMIT_ADDRESS="500 per minute")
    name = unique("alice")
    browser = Browser(app)
    browser.log_in(name)
    browser.log_in(name)
    response = browser.log_in(name)
    assert response.status_code == 429
    # Flask-Limiter rounds the reset time up by a second, which can make it 61 minutes.
    assert re.fullmatch(r"Too many attempts\. Try again in 6[01] minutes\.", alert(response))
    assert 3590 <= int(response.headers["Retry-After"]) <= 3601


def test_a_get_of_the_login_page_is_never_throttled(make_app: MakeApp) -> None:
    app = make_app(**ADDRESS_LIMIT)
    browser = Browser(app)
    for _ in range(5):
        browser.log_in(unique("guess"))
    assert browser.client.get("/accounts/login").status_code == 200


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_login_failures_are_counted_in_redis_under_the_apps_prefix(
    make_app: MakeApp, redis_client: redis.Redis
) -> None:
    app = make_app(**ACCOUNT_LIMIT)
    browser = Browser(app)
    for _ in range(3):
        browser.log_in(unique("alice"))
    prefix = app.config["REDIS_KEY_PREFIX"]
    keys = list(redis_client.scan_iter(match=f"{prefix}limits*"))
    assert keys, f"no Redis key starts with {prefix}limits"


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_apps_with_different_key_prefixes_keep_separate_counts(make_app: MakeApp) -> None:
    """Two sites sharing one Redis (or two test runs) must not throttle each other's users."""
    name = unique("alice")
    first = make_app(**ACCOUNT_LIMIT)
    with first.app_context():
        create_account(name)
    for _ in range(3):
        Browser(first).log_in(name)
    assert Browser(first).log_in(name, PASSWORD).status_code == 429
    prefix = first.config["REDIS_KEY_PREFIX"] + "other:"
    second = make_app(**ACCOUNT_LIMIT, REDIS_KEY_PREFIX=prefix)  # same database, same user
    assert Browser(second).log_in(name, PASSWORD).status_code == 302


def test_simultaneous_guesses_are_counted_before_any_password_is_checked(
    make_app: MakeApp,
) -> None:
    """Stops a burst racing the limiter: 20 wrong passwords sent at once for one account were
    all checked (every one answered 401) against a limit of 3, since the count came after."""
    import threading

    app = make_app(**ACCOUNT_LIMIT)
    name = unique("alice")
    with app.app_context():
        create_account(name)
    browsers = [Browser(app) for _ in range(20)]
    for browser in browsers:  # each has its page and token before the burst
        match = CSRF_META.search(browser.client.get("/accounts/login").get_data(as_text=True))
        assert match
        browser.token = match.group(1)
    start, statuses = threading.Barrier(len(browsers)), []

    def guess(browser: Browser) -> None:
        start.wait()
        statuses.append(browser.log_in(name).status_code)

    threads = [threading.Thread(target=guess, args=(b,)) for b in browsers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [401] * 3 + [429] * 17


def test_the_owners_browser_is_not_locked_out_by_strangers(make_app: MakeApp) -> None:
    """Stops anyone locking the owner out: strangers' failures lock the account for browsers
    without a device cookie, while the owner's browser, which signed in before, still can."""
    app = make_app(**ACCOUNT_LIMIT)
    name = unique("alice")
    with app.app_context():
        create_account(name)
    owner = Browser(app)
    assert owner.log_in(name, PASSWORD).status_code == 302  # gets the device cookie
    owner.client.post("/accounts/logout", data={"csrf_token": owner_token(owner)})
    attacker = Browser(app)
    for _ in range(3):
        assert attacker.log_in(name).status_code == 401
    assert_throttled(attacker.log_in(name, PASSWORD))
    assert_throttled(Browser(app).log_in(name, PASSWORD))  # any browser without the cookie
    assert owner.log_in(name, PASSWORD).status_code == 302
    assert owner.whoami() == name


def test_a_device_cookie_has_its_own_allowance(make_app: MakeApp) -> None:
    """Stops a stolen or guessing device from bypassing throttling: its failures count
    against its own cookie, which locks after the account limit."""
    app = make_app(**ACCOUNT_LIMIT)
    name = unique("alice")
    with app.app_context():
        create_account(name)
    owner = Browser(app)
    assert owner.log_in(name, PASSWORD).status_code == 302
    owner.client.post("/accounts/logout", data={"csrf_token": owner_token(owner)})
    for _ in range(3):
        assert owner.log_in(name).status_code == 401
    assert_throttled(owner.log_in(name, PASSWORD))
    assert Browser(app).log_in(name, PASSWORD).status_code == 302  # the account is still open


def test_a_forged_device_cookie_counts_as_a_stranger(make_app: MakeApp) -> None:
    app = make_app(**ACCOUNT_LIMIT)
    name = unique("alice")
    with app.app_context():
        create_account(name)
    attacker = Browser(app)
    attacker.client.set_cookie("device", "W1sxLCJhYmMiXV0.forged", path="/accounts/login")
    for _ in range(3):
        assert attacker.log_in(name).status_code == 401
    assert_throttled(attacker.log_in(name, PASSWORD))


def test_the_device_cookie_is_signed_http_only_and_sent_only_to_the_login(
    make_app: MakeApp,
) -> None:
    app = make_app(**ACCOUNT_LIMIT)
    name = unique("alice")
    with app.app_context():
        create_account(name)
    browser = Browser(app)
    response = browser.log_in(name, PASSWORD)
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("device=")]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/accounts/login" in cookie
    assert str(name) not in cookie  # it names the account by id, signed


def owner_token(browser: Browser) -> str:
    match = CSRF_META.search(browser.client.get("/accounts/profile").get_data(as_text=True))
    assert match
    return match.group(1)
