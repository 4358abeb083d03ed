"""Request hooks: the current user in g, security headers, CSRF on every state change."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.conftest import add_user, csrf_token

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@pytest.mark.parametrize("path", ["/", "/healthz", "/no-such-page", "/api/no-such-thing"])
def test_every_response_carries_the_security_headers(app: Flask, path: str) -> None:
    response = app.test_client().get(path)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "Strict-Transport-Security" not in response.headers  # only in production


def test_production_adds_hsts(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app("production", SECRET_KEY="s" * 48, SITE_URL="https://localhost")
    hsts = (
        app.test_client()
        .get("/", base_url="https://localhost")
        .headers["Strict-Transport-Security"]
    )
    assert hsts.startswith("max-age=31536000")


def test_a_post_without_a_csrf_token_is_refused(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/_probe/form", data={"value": "x"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "CSRF" in page and "Reload the page" in page


def test_a_json_post_without_a_csrf_token_gets_a_json_error(app: Flask) -> None:
    response = app.test_client().post("/api/_probe/json", json={"value": 1})
    assert response.status_code == 400
    assert response.is_json
    assert response.json["error"] == "CSRF check failed"


def test_a_wrong_csrf_token_is_refused(app: Flask) -> None:
    client = app.test_client()
    csrf_token(client)
    response = client.post("/_probe/form", data={"value": "x", "csrf_token": "forged"})
    assert response.status_code == 400


def test_a_token_from_another_session_is_refused(app: Flask) -> None:
    other = app.test_client()
    stolen = csrf_token(other)
    victim = app.test_client()
    csrf_token(victim)
    assert victim.post("/_probe/form", data={"csrf_token": stolen}).status_code == 400


def test_posts_with_the_token_in_the_form_or_header_pass(app: Flask) -> None:
    client = app.test_client()
    token = csrf_token(client)
    response = client.post("/_probe/form", data={"value": "x", "csrf_token": token})
    assert response.status_code == 200 and response.json["value"] == "x"
    response = client.post("/api/_probe/json", json={"value": 7}, headers={"X-CSRFToken": token})
    assert response.status_code == 200 and response.json["value"] == 7


def test_the_logged_in_user_is_loaded_into_g(app: Flask) -> None:
    with app.app_context():
        user_id = add_user("carol")
    client = app.test_client()
    assert client.get("/_probe/whoami").json == {"user": None}
    client.get(f"/_probe/login/{user_id}")
    assert client.get("/_probe/whoami").json == {"user": "carol"}
    assert "carol" in client.get("/").get_data(as_text=True)


def test_a_deactivated_user_is_not_loaded(app: Flask) -> None:
    with app.app_context():
        user_id = add_user("dave", is_active=False)
    client = app.test_client()
    client.get(f"/_probe/login/{user_id}")
    assert client.get("/_probe/whoami").json == {"user": None}
    assert client.get("/_probe/private").status_code == 302


def test_a_username_is_shown_escaped(app: Flask) -> None:
    with app.app_context():
        user_id = add_user("<script>alert(1)</script>")
    client = app.test_client()
    client.get(f"/_probe/login/{user_id}")
    page = client.get("/").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_login_required_sends_anonymous_visitors_to_the_login_page(app: Flask) -> None:
    response = app.test_client().get("/_probe/private?x=1")
    assert response.status_code == 302
    assert response.headers["Location"] == "/accounts/login?next=/_probe/private?x%3D1"


def test_app_log_lines_never_hold_url_tokens(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """Stops a reset or share token that an app log line quotes (a path, a URL, werkzeug's
    request line under runserver) from reaching the log."""
    import logging

    with caplog.at_level(logging.INFO):
        logging.getLogger("apps.example").info(
            "refused %s", "/accounts/password/reset/tok3n-SECRET?next=/"
        )
        logging.getLogger("werkzeug").info(
            '127.0.0.1 - - "%s" 200 -', "GET /transfer/files/f/download?x=1&share=SHARE-SECRET"
        )
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "refused /accounts/password/reset/[redacted]?next=/",
        '127.0.0.1 - - "GET /transfer/files/f/download?x=1&share=[redacted]" 200 -',
    ]


def test_without_a_registered_login_page_login_required_answers_401(app: Flask) -> None:
    del app.extensions["login_view"]  # as if no installed app offered logins
    client = app.test_client()
    assert client.get("/_probe/private").status_code == 401
    assert 'href="/accounts/login"' not in client.get("/").get_data(as_text=True)
