"""The links pages show: built once and kept, yet always the link Flask would build here."""

from __future__ import annotations

import re

from flask import Flask, url_for

from project.links import template_url_for

STYLESHEET = re.compile(r'<link rel="stylesheet" href="([^"]+)">')
LOGIN_LINK = re.compile(r'<a href="([^"]+)">Log in</a>')


def test_kept_links_are_the_links_flask_builds(app: Flask) -> None:
    with app.test_request_context("/"):
        for endpoint, values in [
            ("core.home", {}),
            ("static", {"filename": "css/app.css"}),
            ("accounts.revoke_api_key", {"key_pk": 7}),
            ("admin.user_list", {"q": "a&b <c>", "page": 2}),
        ]:
            expected = url_for(endpoint, **values)
            assert template_url_for(endpoint, **values) == expected  # built, kept
            assert template_url_for(endpoint, **values) == expected  # reused
        assert template_url_for("core.home", _anchor="top") == "/#top"  # not kept: Flask's


def test_a_site_under_a_path_gets_its_own_links(app: Flask) -> None:
    """The same app behind a proxy at /site and at the root: each page links within its own root."""
    client = app.test_client()
    root = client.get("/").get_data(as_text=True)
    prefixed = client.get("/", base_url="http://localhost/site/").get_data(as_text=True)
    again = client.get("/").get_data(as_text=True)
    for page, prefix in ((root, ""), (prefixed, "/site"), (again, "")):
        stylesheet, login = STYLESHEET.search(page), LOGIN_LINK.search(page)
        assert stylesheet and stylesheet.group(1) == f"{prefix}/static/css/app.css"
        assert login and login.group(1) == f"{prefix}/accounts/login"


def test_past_the_bound_kept_links_start_again(app: Flask, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Many one-off links (searches, ids) never grow the kept ones past the bound, nor break one."""
    monkeypatch.setattr("project.links._KEPT_MAX", 5)
    with app.test_request_context("/"):
        for key_pk in range(1, 23):
            link = template_url_for("accounts.revoke_api_key", key_pk=key_pk)
            assert link == url_for("accounts.revoke_api_key", key_pk=key_pk)
            assert len(app.extensions["template_links"]) <= 5
        assert template_url_for("core.home") == "/"


def test_a_template_rendered_outside_a_request_builds_its_links(app: Flask) -> None:
    """A mail or a command renders in an app context alone: links come from SERVER_NAME."""
    app.config["SERVER_NAME"] = "example.test"
    with app.app_context():
        rendered = app.jinja_env.from_string("{{ url_for('core.home') }}").render()
        assert rendered == url_for("core.home") == "http://example.test/"
