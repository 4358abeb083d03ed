"""Requests for a host this site is not are refused before the app runs (Host header poisoning)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask


@pytest.mark.parametrize("host", ["evil.example", "evil.example:5000", "localhost.evil.example"])
def test_an_untrusted_host_gets_400_before_anything_runs(app: Flask, host: str) -> None:
    """Stops links and redirects built from a forged Host: nothing is routed, no session made."""
    client = app.test_client()
    response = client.get("/accounts/login", headers={"Host": host})
    assert response.status_code == 400
    assert response.get_data(as_text=True) == "This site does not answer to that host name.\n"
    assert "Set-Cookie" not in response.headers
    api = client.get("/api/transfer/uploads", headers={"Host": host})
    assert api.status_code == 400
    assert api.json == {
        "error": "Bad Request",
        "status": 400,
        "message": "This site does not answer to that host name.",
    }


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:5000", "files.example.com"])
def test_trusted_hosts_are_served(make_app: Any, host: str) -> None:
    app = make_app(SITE_URL="https://files.example.com")
    assert app.test_client().get("/", headers={"Host": host}).status_code == 200


def test_a_forwarded_host_is_checked_too(make_app: Any) -> None:
    """Stops a forged X-Forwarded-Host, passed on by a trusted proxy, from deciding links."""
    client = make_app(TRUSTED_PROXIES=1).test_client()
    assert client.get("/", headers={"X-Forwarded-Host": "evil.example"}).status_code == 400
    assert client.get("/", headers={"X-Forwarded-Host": "localhost"}).status_code == 200
