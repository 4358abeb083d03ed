"""Server-side sessions on both backends: data on the server, msgpack, safe cookies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
import redis.connection
from flask import Flask
from flask.testing import FlaskClient

from project import sessions
from tests.conftest import REDIS_URL, create_account


def session_cookie(response) -> str:  # type: ignore[no-untyped-def]
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    assert len(headers) == 1, headers
    return headers[0]


def test_session_round_trip_and_cookie_flags(app: Flask) -> None:
    client = app.test_client()
    response = client.get("/_probe/session?value=hello")
    cookie = session_cookie(response)
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http in development and test
    assert "Path=/" in cookie
    assert client.get("/_probe/session/read").json == {"probe": "hello"}


def test_production_cookie_is_secure(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app("production", SECRET_KEY="s" * 48, SITE_URL="https://localhost")
    cookie = session_cookie(app.test_client().get("/_probe/session?value=x"))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_the_cookie_carries_only_a_random_id(app: Flask) -> None:
    client = app.test_client()
    sid = client.get("/_probe/session?value=top-secret-value").json["sid"]
    cookie = session_cookie(client.get("/_probe/session?value=top-secret-value"))
    assert "top-secret-value" not in cookie
    assert len(sid) >= 43  # 32 random bytes, URL-safe base64


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_session_data_lives_in_redis_under_the_project_prefix(
    app: Flask, redis_client: redis.Redis
) -> None:
    client = app.test_client()
    sid = client.get("/_probe/session?value=in-redis").json["sid"]
    key = f"{app.config['REDIS_KEY_PREFIX']}session:{sid}"
    raw = redis_client.get(key)
    assert raw is not None, f"no Redis key {key}"
    assert msgspec.msgpack.decode(raw)["probe"] == "in-redis"  # msgpack, not pickle
    ttl = redis_client.ttl(key)
    assert 0 < ttl <= app.config["SESSION_LIFETIME_SECONDS"]


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_session_lifetime_setting_sets_the_redis_expiry(make_app, redis_client) -> None:  # type: ignore[no-untyped-def]
    app = make_app(SESSION_LIFETIME_SECONDS=120)
    sid = app.test_client().get("/_probe/session?value=x").json["sid"]
    ttl = redis_client.ttl(f"{app.config['REDIS_KEY_PREFIX']}session:{sid}")
    assert 100 < ttl <= 120


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_filesystem_sessions_are_msgpack_files_private_to_the_app(app: Flask) -> None:
    client = app.test_client()
    client.get("/_probe/session?value=on-disk")
    files = [p for p in (Path(app.config["INSTANCE_PATH"]) / "sessions").iterdir() if p.is_file()]
    decoded = []
    for path in files:
        data = path.read_bytes()
        assert not data[4:].startswith(b"\x80"), f"{path} is a pickle"
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
        decoded.append(msgspec.msgpack.decode(data[4:]))
    assert any(isinstance(d, dict) and d.get("probe") == "on-disk" for d in decoded)


def test_a_forged_or_unknown_session_id_gets_a_fresh_empty_session(app: Flask) -> None:
    client = app.test_client()
    client.get("/_probe/session?value=mine")
    attacker = app.test_client()
    attacker.set_cookie("session", "forged-" + "A" * 40)
    assert attacker.get("/_probe/session/read").json == {"probe": None}


def test_a_damaged_session_file_or_value_is_treated_as_no_session(app: Flask) -> None:
    client = app.test_client()
    sid = client.get("/_probe/session?value=x").json["sid"]
    if app.config["STACK"] == "services":
        with redis.Redis.from_url(REDIS_URL) as r:
            r.set(f"{app.config['REDIS_KEY_PREFIX']}session:{sid}", b"\xc1not msgpack")
    else:
        for path in (Path(app.config["INSTANCE_PATH"]) / "sessions").iterdir():
            path.write_bytes(path.read_bytes()[:4] + b"\xc1not msgpack")
    response = client.get("/_probe/session/read")
    assert response.status_code == 200
    assert response.json == {"probe": None}


class _Exploit:
    """Unpickling this creates a directory: proof that pickle.loads ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_a_pickle_planted_in_redis_is_never_unpickled(
    app: Flask, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Flask-Session 0.8 falls back to pickle.loads on undecodable data; we must not."""
    import pickle

    client = app.test_client()
    sid = client.get("/_probe/session?value=x").json["sid"]
    marker = tmp_path / "pwned"
    redis_client.set(
        f"{app.config['REDIS_KEY_PREFIX']}session:{sid}", pickle.dumps(_Exploit(str(marker)))
    )
    assert client.get("/_probe/session/read").json == {"probe": None}
    assert not marker.exists(), "a pickle from Redis was executed"


# -- the public API apps use ----------------------------------------------------------------


def logged_in(app: Flask, username: str = "alice") -> tuple[FlaskClient, int, str]:
    """A browser logged in as a new user: (client, user id, session id)."""
    with app.app_context():
        user_id = create_account(username)
    client = app.test_client()
    assert client.get(f"/_probe/login/{user_id}").json == {"ok": True}
    cookie = client.get_cookie("session")
    assert cookie is not None
    return client, user_id, cookie.value


def whoami(client: FlaskClient) -> str | None:
    user: str | None = client.get("/_probe/whoami").json["user"]  # type: ignore[index]
    return user


def test_current_sid_is_the_id_the_cookie_carries(app: Flask) -> None:
    client, _, sid = logged_in(app)
    with client:
        client.get("/_probe/whoami")
        assert sessions.current_sid() == sid


def test_a_logged_in_session_exists_until_delete_session_ends_it(app: Flask) -> None:
    client, _, sid = logged_in(app)
    other, _, other_sid = logged_in(app, "bob")
    with app.app_context():
        assert sessions.session_exists(sid)
        sessions.delete_session(sid)
        assert not sessions.session_exists(sid)
        assert sessions.session_exists(other_sid)
    assert whoami(client) is None  # the cookie no longer logs in
    assert whoami(other) == "bob"


def test_the_index_says_which_of_a_users_sessions_are_still_in_the_store(app: Flask) -> None:
    """An ended session stays in the user's index until pruned, marked as gone, not as open."""
    _, user_id, first = logged_in(app)
    second = app.test_client()
    assert second.get(f"/_probe/login/{user_id}").json == {"ok": True}
    cookie = second.get_cookie("session")
    assert cookie is not None
    with app.app_context():
        sessions.delete_session(first)  # the store only: the index still names it
        listed = sessions.index_entries_with_liveness(user_id)
        assert {sid: alive for sid, (_, alive) in listed.items()} == {
            first: False,
            cookie.value: True,
        }
        assert all(entry["device"] for entry, _ in listed.values())
        assert sessions.index_entries_with_liveness(user_id + 1000) == {}


def test_the_profile_page_asks_redis_twice_however_many_sessions_are_open(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the session, then the index with each session's liveness: nothing per session."""
    if app.config["STACK"] != "services":
        pytest.skip("round trips to Redis: the services stack only")
    client, user_id, _ = logged_in(app)
    for _ in range(4):  # four more browsers, one of them since logged out of
        other = app.test_client()
        assert other.get(f"/_probe/login/{user_id}").json == {"ok": True}
    with app.app_context():
        sessions.delete_session(other.get_cookie("session").value)  # type: ignore[union-attr]
    assert client.get("/accounts/profile").status_code == 200  # prunes the ended one

    sent: list[bytes] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(command if isinstance(command, bytes) else b"".join(command))
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    page = client.get("/accounts/profile")
    monkeypatch.undo()
    assert page.status_code == 200
    assert page.get_data(as_text=True).count('<span class="device"') == 4  # each open one
    assert len(sent) <= 2, [c[:60] for c in sent]


def test_an_unknown_session_does_not_exist_and_deleting_it_is_no_error(app: Flask) -> None:
    with app.app_context():
        assert not sessions.session_exists("unknown-" + "A" * 40)
        sessions.delete_session("unknown-" + "A" * 40)


def test_logging_in_puts_the_session_in_its_users_index(app: Flask) -> None:
    _, alice, sid = logged_in(app)
    _, bob, bob_sid = logged_in(app, "bob")
    with app.app_context():
        assert list(sessions.index_entries(alice)) == [sid]
        assert list(sessions.index_entries(bob)) == [bob_sid]
        assert sessions.index_count() == 2


def test_the_index_lists_replaces_and_removes_a_users_session_ids(app: Flask) -> None:
    with app.app_context():
        assert sessions.index_entries(1) == {}
        assert sessions.index_count() == 0
        sessions.index_put(1, "sid-a", {"device": "phone", "seen": 1})
        sessions.index_put(1, "sid-b", {"device": "laptop", "seen": 2})
        sessions.index_put(2, "sid-c", {"device": "desktop", "seen": 3})
        sessions.index_put(1, "sid-a", {"device": "phone", "seen": 4})  # replaces
        assert sessions.index_entries(1) == {
            "sid-a": {"device": "phone", "seen": 4},
            "sid-b": {"device": "laptop", "seen": 2},
        }
        assert sessions.index_count() == 3
        sessions.index_remove(1, "sid-a")
        sessions.index_remove(1, "sid-unknown")  # no error
        assert sessions.index_entries(1) == {"sid-b": {"device": "laptop", "seen": 2}}
        assert sessions.index_entries(2) == {"sid-c": {"device": "desktop", "seen": 3}}
        assert sessions.index_count() == 2
        sessions.index_remove(1, "sid-b")
        sessions.index_remove(2, "sid-c")
        assert sessions.index_entries(1) == {} and sessions.index_count() == 0


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_the_index_lives_in_redis_under_the_project_prefix_and_expires(
    app: Flask, redis_client: redis.Redis
) -> None:
    with app.app_context():
        sessions.index_put(7, "sid-a", {"device": "phone"})
    key = f"{app.config['REDIS_KEY_PREFIX']}user_sessions:7"
    assert redis_client.hkeys(key) == [b"sid-a"]
    assert 0 < redis_client.ttl(key) <= app.config["SESSION_LIFETIME_SECONDS"]
