"""Redis down, seen by a browser and an API client: 503 with Retry-After where needed, no 500.

A private ``redis-server`` (stopped and started by the test) stands in for the
production one; the database is the shared MariaDB. The whole fault suite
(``tests/faults``) does the same against gunicorn with traffic in flight;
these are the answers page by page, quickly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Blueprint, Flask, jsonify, session
from flask.testing import FlaskClient

from project import create_app
from project import migrations as project_migrations
from project.extensions import db
from tests.conftest import CSRF_META, add_user
from tests.faults.services import RedisService, missing_binaries
from tests.probe import probe


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisService]:
    missing = missing_binaries()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} to run a private Redis")
    service = RedisService(tmp_path)
    service.start()
    yield service
    service.stop()


@pytest.fixture
def site(tmp_path: Path, mysql_database: str, private_redis: RedisService) -> Iterator[Flask]:
    app = create_app(
        "test",
        overrides={
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "MEDIA_ROOT": str(tmp_path / "media"),
            "DATABASE_URL": mysql_database,
            "REDIS_URL": private_redis.url,
            "WTF_CSRF_ENABLED": True,
        },
        environ={},
    )
    app.register_blueprint(probe)
    midway = Blueprint("midway", __name__)

    @midway.get("/_probe/redis-dies-then-session-write")
    def redis_dies_then_session_write():  # type: ignore[no-untyped-def]
        private_redis.stop()  # after the session was read, before it is saved
        session["promised"] = "kept"
        return jsonify(saved=True)

    app.register_blueprint(midway)
    project_migrations.migrate(app)
    yield app
    db.close()


@pytest.fixture
def alice(site: Flask) -> FlaskClient:
    """A logged-in browser."""
    with site.app_context():
        user_id = add_user("alice")
    client = site.test_client()
    assert client.get(f"/_probe/login/{user_id}").status_code == 200
    assert client.get("/accounts/profile").status_code == 200
    return client


def assert_unavailable(response, json: bool = False) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    if json:
        assert response.json["status"] == 503
    else:
        assert "temporarily unavailable" in response.get_data(as_text=True)


def test_while_redis_is_down_open_pages_work_and_the_rest_answer_503(
    alice: FlaskClient, private_redis: RedisService, caplog: pytest.LogCaptureFixture
) -> None:
    page = alice.get("/accounts/login")
    token = CSRF_META.search(page.get_data(as_text=True))[1]  # type: ignore[index]
    private_redis.stop()
    with caplog.at_level(logging.WARNING):
        assert alice.get("/").status_code == 200  # nothing of the user's is needed
        with alice.get("/static/css/app.css") as static:
            assert static.status_code == 200
        # Who is asking cannot be known: not a login redirect that would say "logged out".
        assert_unavailable(alice.get("/accounts/profile"))
        upload = alice.get("/api/transfer/uploads/" + "0" * 32, headers={"Tus-Resumable": "1.0.0"})
        assert_unavailable(upload, json=True)
        # A form cannot be checked against its token, nor its effect kept.
        posted = alice.post("/accounts/login", data={"login": "alice", "password": "x"})
        assert_unavailable(posted)
        assert_unavailable(alice.post("/accounts/logout", data={"csrf_token": token}))
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]

    private_redis.start()  # with its AOF: the session comes back, nobody logs in again
    assert alice.get("/accounts/profile").status_code == 200


def test_a_session_that_cannot_be_saved_turns_the_answer_into_a_503(
    alice: FlaskClient, private_redis: RedisService
) -> None:
    response = alice.get("/_probe/redis-dies-then-session-write")
    assert_unavailable(response)
    assert "Set-Cookie" not in response.headers
    private_redis.start()
    assert alice.get("/_probe/session/read").json == {"probe": None}  # what was promised
    assert alice.get("/accounts/profile").status_code == 200  # and still logged in
