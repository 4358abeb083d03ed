"""Visitors cost the session store nothing: a form's CSRF token rides in a signed cookie.

A crawler fetching the login page used to leave one stored session per request,
kept for 14 days. Now only something of the user's (a login, a flashed
message) makes a session worth storing.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import redis
from flask import Flask

from project.session_interface import CSRF_COOKIE
from tests.conftest import CSRF_META, PASSWORD, create_account

FORM_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def stored_sessions(app: Flask, redis_client: redis.Redis | None) -> int:
    if redis_client is not None and app.config.get("REDIS"):
        prefix = app.config["REDIS_KEY_PREFIX"] + "session:"
        return len(list(redis_client.scan_iter(match=prefix + "*", count=1000)))
    folder = Path(app.config["INSTANCE_PATH"]) / "sessions"
    count_file = hashlib.sha256(b"__wz_cache_count").hexdigest()  # cachelib's own bookkeeping
    return sum(1 for f in folder.iterdir() if f.name != count_file) if folder.exists() else 0


def test_cookieless_visits_to_pages_with_forms_store_no_session(
    app: Flask, redis_client: redis.Redis
) -> None:
    for _ in range(50):  # a crawler: a fresh client, no cookies, every time
        page = app.test_client().get("/accounts/login")
        assert page.status_code == 200
        assert FORM_TOKEN.search(page.get_data(as_text=True))
        assert "session=" not in page.headers.get("Set-Cookie", "")
    assert stored_sessions(app, redis_client) == 0


def test_a_visitors_form_token_works_and_logging_in_stores_the_session(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    page = client.get("/accounts/login").get_data(as_text=True)
    token = FORM_TOKEN.search(page)[1]  # type: ignore[index]
    assert client.get_cookie(CSRF_COOKIE) is not None and client.get_cookie("session") is None
    assert client.get("/accounts/login").status_code == 200  # the same token, nothing new
    done = client.post("/accounts/login", data={"csrf_token": token, "login": "alice",
                                                "password": PASSWORD})  # fmt: skip
    assert done.status_code == 302
    assert client.get_cookie("session") is not None
    assert client.get_cookie(CSRF_COOKIE) is None  # the token lives in the stored session now
    assert client.get("/accounts/profile").status_code == 200


def test_a_forged_or_missing_token_cookie_is_refused(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    token = FORM_TOKEN.search(client.get("/accounts/login").get_data(as_text=True))[1]  # type: ignore[index]
    data = {"csrf_token": token, "login": "alice", "password": PASSWORD}
    stranger = app.test_client()  # the form token without its cookie (another browser)
    assert stranger.post("/accounts/login", data=data).status_code == 400
    stranger.set_cookie(CSRF_COOKIE, "forged.value")
    assert stranger.post("/accounts/login", data=data).status_code == 400
    assert client.post("/accounts/login", data=data).status_code == 302


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_logging_out_leaves_nothing_stored(app: Flask, redis_client: redis.Redis) -> None:
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    token = FORM_TOKEN.search(client.get("/accounts/login").get_data(as_text=True))[1]  # type: ignore[index]
    client.post("/accounts/login", data={"csrf_token": token, "login": "alice",
                                         "password": PASSWORD})  # fmt: skip
    assert stored_sessions(app, redis_client) == 1
    meta = CSRF_META.search(client.get("/accounts/profile").get_data(as_text=True))[1]  # type: ignore[index]
    assert client.post("/accounts/logout", data={"csrf_token": meta}).status_code == 302
    client.get("/accounts/login")
    assert stored_sessions(app, redis_client) == 0
