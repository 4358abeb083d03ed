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
from tests.accounts.conftest import Site, unique
from tests.conftest import PASSWORD

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
    assert browser.log_in(name).status_code == 401  # the third failure, not the seventh attempt
    assert_throttled(browser.log_in(name, PASSWORD))


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
