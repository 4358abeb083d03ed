"""What nginx itself must get right: client addresses, the HTTPS redirect, static files.

The login throttle counts per client address, and with ``TRUSTED_PROXIES=1``
the app takes that address from the ``X-Forwarded-For`` nginx sets. Clients
connect from other loopback addresses (127.0.0.2, ...) so that the address
nginx forwards differs from the one gunicorn sees (nginx's own, 127.0.0.1).
"""

from __future__ import annotations

import re

import requests

from tests.conftest import CSRF_META, PASSWORD, create_account
from tests.deploy.conftest import Deployment

WRONG = "Wrong-Password-1"
LIMIT = 5  # LOGIN_LIMIT_ADDRESS in DEPLOY_SETTINGS


def log_in(client: requests.Session, base: str, login: str, password: str = WRONG, **headers: str):  # type: ignore[no-untyped-def]
    page = client.get(base + "/accounts/login")
    match = CSRF_META.search(page.text)
    assert match, page.text
    return client.post(
        base + "/accounts/login",
        data={"csrf_token": match.group(1), "login": login, "password": password},
        headers={"Referer": base + "/accounts/login", **headers},
        allow_redirects=False,
    )


def test_the_app_sees_the_address_nginx_forwards(deployment: Deployment) -> None:
    with deployment.app_context():
        create_account("roamer")
    client = deployment.session(source="127.0.0.2")
    assert log_in(client, deployment.url, "roamer", PASSWORD).status_code == 302
    sessions = client.get(deployment.url + "/accounts/profile").text
    assert re.search(r"<td>127\.0\.0\.2</td>", sessions), "the session list shows nginx's address"


def test_the_login_throttle_counts_the_forwarded_address(deployment: Deployment) -> None:
    guesser = deployment.session(source="127.0.0.3")
    for i in range(LIMIT):
        assert log_in(guesser, deployment.url, f"nobody{i}").status_code == 401
    assert log_in(guesser, deployment.url, "nobody-more").status_code == 429
    # Another client behind the same nginx is not locked out with it.
    bystander = deployment.session(source="127.0.0.4")
    assert log_in(bystander, deployment.url, "nobody-else").status_code == 401


def test_an_address_a_client_forwards_itself_is_not_believed(deployment: Deployment) -> None:
    """nginx appends the real address; the app takes the last one, so a forged one is moot."""
    forger = deployment.session(source="127.0.0.5")
    for i in range(LIMIT):
        forged = {"X-Forwarded-For": f"198.51.100.{i}"}
        assert log_in(forger, deployment.url, f"forged{i}", **forged).status_code == 401
    forged = {"X-Forwarded-For": "198.51.100.99"}
    assert log_in(forger, deployment.url, "forged-more", **forged).status_code == 429


def test_plain_http_redirects_to_https(deployment: Deployment) -> None:
    port = deployment.nginx.layout.http_port
    answer = requests.get(
        f"http://127.0.0.1:{port}/accounts/login?next=/x", allow_redirects=False, timeout=10
    )
    assert answer.status_code == 301
    assert answer.headers["Location"] == "https://127.0.0.1/accounts/login?next=/x"
    webroot = deployment.nginx.layout.webroot / ".well-known" / "acme-challenge"
    webroot.mkdir(parents=True, exist_ok=True)
    (webroot / "token123").write_text("proof")
    challenge = requests.get(
        f"http://127.0.0.1:{port}/.well-known/acme-challenge/token123", timeout=10
    )
    assert challenge.status_code == 200 and challenge.text == "proof"


def test_static_files_come_from_nginx(deployment: Deployment) -> None:
    client = deployment.session()
    for path in (
        "/static/css/app.css",
        "/realtime/static/realtime/chat.js",
        "/transfer/static/transfer/upload.js",
    ):
        answer = client.get(deployment.url + path)
        assert answer.status_code == 200, path
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        last = [entry for entry in deployment.nginx.access_log if entry[1] == path][-1]
        assert last[4] == "-", f"{path} went to gunicorn"
