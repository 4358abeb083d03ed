"""Login throttling: failed attempts per account and per address, then a 429 with the wait.

The windows are shortened to seconds so a test can watch one close. Each test
uses names of its own, so attempts counted by one test never reach another.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from apps.accounts.forms import MESSAGES
from tests.accounts.conftest import Browser, Site, unique
from tests.conftest import CSRF_META, PASSWORD

LoginSite = Callable[..., Site]

THROTTLED = "Too many attempts. Try again in"
#: Windows long enough that no test outlasts them; the short ones are for watching one close.
ACCOUNT_LIMIT = {"LOGIN_LIMIT_ACCOUNT": "3 per minute", "LOGIN_LIMIT_ADDRESS": "500 per minute"}
SHORT_ACCOUNT_LIMIT = {
    "LOGIN_LIMIT_ACCOUNT": "3 per 2 seconds",
    "LOGIN_LIMIT_ADDRESS": "500 per minute",
}
ADDRESS_LIMIT = {"LOGIN_LIMIT_ACCOUNT": "100 per minute", "LOGIN_LIMIT_ADDRESS": "4 per 2 seconds"}


def alert(response: Any) -> str:
    match = re.search(r'<p class="alert alert-error" role="alert">(.*?)</p>', response.text)
    assert match, "the page shows no alert"
    return match.group(1)


def assert_throttled(response: Any, window: int = 60) -> None:
    assert response.status_code == 429
    assert alert(response).startswith(THROTTLED)
    assert 0 < int(response.headers["Retry-After"]) <= window + 1
    assert 'name="login"' in response.text  # the login form again, not a bare error page


def test_three_failures_lock_the_account_even_for_the_right_password(
    login_site: LoginSite,
) -> None:
    site = login_site(**ACCOUNT_LIMIT)
    name, browser = site.account(), site.browser()
    for _ in range(3):
        response = browser.log_in(name)
        assert response.status_code == 401
        assert MESSAGES["login_failed"] in response.text
    assert_throttled(browser.log_in(name, PASSWORD))
    assert browser.whoami() is None
    assert_throttled(site.browser().log_in(name.upper(), PASSWORD))  # any case, any browser


def test_an_unknown_username_is_throttled_the_same_way(login_site: LoginSite) -> None:
    site = login_site(**ACCOUNT_LIMIT)
    real, ghost, browser = site.account(), unique("ghost"), site.browser()
    real_answers = [browser.log_in(real) for _ in range(4)]
    ghost_answers = [browser.log_in(ghost) for _ in range(4)]
    assert [r.status_code for r in real_answers] == [401, 401, 401, 429]
    assert [r.status_code for r in ghost_answers] == [401, 401, 401, 429]
    ghost = ghost_answers[-1]
    assert_throttled(ghost)
    # The same words; only the minutes may differ by the second that passed in between.
    same = [re.sub(r"\d+ minutes?", "N minutes", alert(r)) for r in (real_answers[-1], ghost)]
    assert same[0] == same[1]


def test_another_account_from_the_same_address_is_not_throttled(login_site: LoginSite) -> None:
    site = login_site(**ACCOUNT_LIMIT)
    alice, bob, browser = site.account("alice"), site.account("bob"), site.browser()
    for _ in range(3):
        browser.log_in(alice)
    assert browser.log_in(alice, PASSWORD).status_code == 429
    assert browser.log_in(bob).status_code == 401
    assert browser.log_in(bob, PASSWORD).status_code == 302
    assert browser.whoami() == bob


def test_successful_logins_do_not_count(login_site: LoginSite) -> None:
    site = login_site(**ACCOUNT_LIMIT)
    name, browser = site.account(), site.browser()
    assert browser.log_in(name).status_code == 401
    assert browser.log_in(name).status_code == 401
    for _ in range(4):
        assert browser.log_in(name, PASSWORD).status_code == 302
    # This browser now has a device cookie: a stranger's failure is the account's third.
    stranger = site.browser()
    assert stranger.log_in(name).status_code == 401  # the third failure, not the seventh attempt
    assert_throttled(stranger.log_in(name, PASSWORD))


@pytest.mark.slow
def test_the_account_opens_again_when_the_window_has_passed(login_site: LoginSite) -> None:
    site = login_site(**SHORT_ACCOUNT_LIMIT)
    name, browser = site.account(), site.browser()
    for _ in range(3):
        assert browser.log_in(name).status_code == 401
    response = browser.log_in(name, PASSWORD)
    assert response.status_code == 429
    assert alert(response).startswith(THROTTLED)
    assert "Retry-After" in response.headers
    time.sleep(2.5)
    assert browser.log_in(name, PASSWORD).status_code == 302
    assert browser.whoami() == name


def test_failures_across_usernames_lock_the_address(login_site: LoginSite) -> None:
    site = login_site(**ADDRESS_LIMIT)
    alice, browser = site.account(), site.browser()
    for _ in range(4):
        assert browser.log_in(unique("guess")).status_code == 401
    assert browser.log_in(alice, PASSWORD).status_code == 429
    response = site.browser().log_in(unique("other"))  # same address, another browser
    assert response.status_code == 429
    assert alert(response).startswith(THROTTLED)


@pytest.mark.slow
def test_the_address_opens_again_when_the_window_has_passed(login_site: LoginSite) -> None:
    site = login_site(**ADDRESS_LIMIT)
    alice, browser = site.account(), site.browser()
    for _ in range(4):
        browser.log_in(unique("guess"))
    assert browser.log_in(alice, PASSWORD).status_code == 429
    time.sleep(2.5)
    assert browser.log_in(alice, PASSWORD).status_code == 302


def test_the_throttled_message_gives_the_wait_in_minutes(login_site: LoginSite) -> None:
    site = login_site(LOGIN_LIMIT_ACCOUNT="2 per hour", LOGIN_LIMIT_ADDRESS="500 per minute")
    name, browser = unique("alice"), site.browser()
    browser.log_in(name)
    browser.log_in(name)
    response = browser.log_in(name)
    assert response.status_code == 429
    # Flask-Limiter rounds the reset time up by a second, which can make it 61 minutes.
    assert re.fullmatch(r"Too many attempts\. Try again in 6[01] minutes\.", alert(response))
    assert 3590 <= int(response.headers["Retry-After"]) <= 3601


def test_a_get_of_the_login_page_is_never_throttled(login_site: LoginSite) -> None:
    browser = login_site(**ADDRESS_LIMIT).browser()
    for _ in range(5):
        browser.log_in(unique("guess"))
    assert browser.client.get("/accounts/login").status_code == 200


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_login_failures_are_counted_in_redis_under_the_apps_prefix(
    login_site: LoginSite, redis_client: redis.Redis
) -> None:
    site = login_site(**ACCOUNT_LIMIT)
    browser = site.browser()
    for _ in range(3):
        browser.log_in(unique("alice"))
    prefix = site.app.config["REDIS_KEY_PREFIX"]
    keys = list(redis_client.scan_iter(match=f"{prefix}limits*"))
    assert keys, f"no Redis key starts with {prefix}limits"


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_apps_with_different_key_prefixes_keep_separate_counts(login_site: LoginSite) -> None:
    """Two sites sharing one Redis (or two test runs) must not throttle each other's users."""
    first = login_site(**ACCOUNT_LIMIT)
    name = first.account()
    for _ in range(3):
        first.browser().log_in(name)
    assert first.browser().log_in(name, PASSWORD).status_code == 429
    prefix = first.app.config["REDIS_KEY_PREFIX"] + "other:"
    second = login_site(**ACCOUNT_LIMIT, REDIS_KEY_PREFIX=prefix)  # same database, same user
    assert second.browser().log_in(name, PASSWORD).status_code == 302


def test_simultaneous_guesses_are_counted_before_any_password_is_checked(
    login_site: LoginSite,
) -> None:
    """Stops a burst racing the limiter: 20 wrong passwords sent at once for one account were
    all checked (every one answered 401) against a limit of 3, since the count came after."""
    import threading

    site = login_site(**ACCOUNT_LIMIT)
    name = site.account()
    browsers = [site.browser() for _ in range(20)]
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


def signed_in_then_out(site: Site, name: str) -> Browser:
    """The owner's browser: it signed in once (so it holds a device cookie), then out."""
    owner = site.browser()
    assert owner.log_in(name, PASSWORD).status_code == 302
    page = owner.client.get("/accounts/profile").get_data(as_text=True)
    match = CSRF_META.search(page)
    assert match
    owner.client.post("/accounts/logout", data={"csrf_token": match.group(1)})
    return owner


def test_the_owners_browser_is_not_locked_out_by_strangers(login_site: LoginSite) -> None:
    """Stops anyone locking the owner out: strangers' failures lock the account for browsers
    without a device cookie, while the owner's browser, which signed in before, still can."""
    site = login_site(**ACCOUNT_LIMIT)
    name = site.account()
    owner = signed_in_then_out(site, name)
    attacker = site.browser()
    for _ in range(3):
        assert attacker.log_in(name).status_code == 401
    assert_throttled(attacker.log_in(name, PASSWORD))
    assert_throttled(site.browser().log_in(name, PASSWORD))  # any browser without the cookie
    assert owner.log_in(name, PASSWORD).status_code == 302
    assert owner.whoami() == name


def test_a_device_cookie_has_its_own_allowance(login_site: LoginSite) -> None:
    """Stops a stolen or guessing device from bypassing throttling: its failures count
    against its own cookie, which locks after the account limit."""
    site = login_site(**ACCOUNT_LIMIT)
    name = site.account()
    owner = signed_in_then_out(site, name)
    for _ in range(3):
        assert owner.log_in(name).status_code == 401
    assert_throttled(owner.log_in(name, PASSWORD))
    assert site.browser().log_in(name, PASSWORD).status_code == 302  # the account is open


def test_a_forged_device_cookie_counts_as_a_stranger(login_site: LoginSite) -> None:
    site = login_site(**ACCOUNT_LIMIT)
    name = site.account()
    attacker = site.browser()
    attacker.client.set_cookie("device", "W1sxLCJhYmMiXV0.forged", path="/accounts/login")
    for _ in range(3):
        assert attacker.log_in(name).status_code == 401
    assert_throttled(attacker.log_in(name, PASSWORD))


def test_the_device_cookie_is_signed_http_only_and_sent_only_to_the_login(
    login_site: LoginSite,
) -> None:
    site = login_site(**ACCOUNT_LIMIT)
    name = site.account()
    response = site.browser().log_in(name, PASSWORD)
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("device=")]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/accounts/login" in cookie
    assert name not in cookie  # it names the account by id, signed


def test_registrations_past_the_limit_are_refused_while_the_page_keeps_loading(
    login_site: LoginSite,
) -> None:
    """Flask-Limiter's check runs for writes only: a POST past the limit is a 429, a GET never."""
    site = login_site(REGISTER_LIMIT="2 per minute")
    answers = []
    for n in range(3):  # three visitors from one address, each registering once
        client = site.browser().client
        token = CSRF_META.search(client.get("/accounts/register").get_data(as_text=True))
        assert token
        name = unique(f"reg{n}")
        answers.append(
            client.post(
                "/accounts/register",
                data={
                    "csrf_token": token.group(1),
                    "username": name,
                    "email": f"{name}@example.com",
                    "password": PASSWORD,
                    "confirm": PASSWORD,
                },
            )
        )
    assert [a.status_code for a in answers] == [302, 302, 429]
    assert int(answers[2].headers["Retry-After"]) > 0
    for _ in range(5):
        assert client.get("/accounts/register").status_code == 200
