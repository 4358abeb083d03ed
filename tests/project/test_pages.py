"""Pages: home, health, and friendly errors (JSON on API paths)."""

from __future__ import annotations

import pytest
from flask import Flask

from project.db import DatabaseError
from project.extensions import db
from project.settings import BASE_DIR
from project.urls import DatabaseURL


def test_home_page_renders_the_layout(app: Flask) -> None:
    response = app.test_client().get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "<nav" in page and 'href="/"' in page
    assert "/static/css/app.css" in page
    assert 'name="csrf-token"' in page


def test_the_stylesheet_is_served_locally(app: Flask) -> None:
    response = app.test_client().get("/static/css/app.css")
    assert response.status_code == 200
    assert response.mimetype == "text/css"
    assert b".topbar" in response.get_data()
    response.close()


def test_healthz_reports_each_part(app: Flask) -> None:
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    body = response.json
    assert body == {
        "status": "ok",
        "db": "ok",
        "redis": "ok" if app.config["STACK"] == "services" else "off",
        "frames": body["frames"],
    }
    assert body["frames"] in ("cython", "python")
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_healthz_names_redis_when_it_is_down(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens on port 1
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert response.json["failing"] == ["redis"]
    assert response.json["redis"] == "failing"
    assert response.json["db"] == "ok"


def test_healthz_names_the_database_when_it_is_down(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """Stops a stranger learning how to reach the database (engine, host, port, user, error)
    from /healthz while it is down: the body names the part, the log has the details."""
    url = app.config["DATABASE"]
    if url.engine == "sqlite":
        broken = DatabaseURL.parse("sqlite:////proc/no-such-dir/app.db", BASE_DIR)
    else:
        broken = DatabaseURL.parse(f"mysql://root@127.0.0.1:1/{url.name}", BASE_DIR)
    db.configure(broken, 2)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["failing"] == ["db"]
    assert response.json["db"] == "failing"
    text = response.get_data(as_text=True)
    for leak in ("mysql", "sqlite", "127.0.0.1", "root", "/proc", "unreachable"):
        assert leak not in text
    logged = [r.getMessage() for r in caplog.records if r.name == "project.views"]
    assert any("db failing" in line and "unreachable" in line for line in logged)


def test_404_is_a_friendly_page(app: Flask) -> None:
    response = app.test_client().get("/no/such/page")
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert "There is nothing at this address." in page and "Back to the home page" in page


def test_api_errors_are_json(app: Flask) -> None:
    client = app.test_client()
    response = client.get("/api/no/such/thing")
    assert response.status_code == 404 and response.is_json
    assert response.json == {
        "error": "Not Found",
        "status": 404,
        "message": "There is nothing at this address.",
    }
    assert client.get("/", headers={"Accept": "application/json"}).status_code == 200


def test_405_keeps_the_allow_header(app: Flask) -> None:
    response = app.test_client().delete("/healthz")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]


def test_500_hides_the_internals(app: Flask) -> None:
    client = app.test_client()
    response = client.get("/_probe/boom")
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "Something went wrong on our side" in page
    assert "secret internal detail" not in page and "Traceback" not in page
    response = client.get("/api/_probe/boom")
    assert response.status_code == 500 and response.json["error"] == "Internal Server Error"
    assert "secret internal detail" not in response.get_data(as_text=True)


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_a_database_outage_is_a_503_not_a_500(app: Flask) -> None:
    url = app.config["DATABASE"]
    db.configure(DatabaseURL.parse(f"mysql://root@127.0.0.1:1/{url.name}", BASE_DIR), 2)
    response = app.test_client().get("/_probe/row")
    assert response.status_code == 503
    assert "temporarily unavailable" in response.get_data(as_text=True)
    with pytest.raises(DatabaseError), app.app_context():
        db.ping()


def test_a_request_body_over_the_limit_is_refused(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app(MAX_CONTENT_LENGTH=1024)
    response = app.test_client().post(
        "/api/_probe/json", data=b"x" * 4096, content_type="application/json"
    )
    assert response.status_code == 413
    assert response.is_json
