"""gunicorn reached without nginx: a client's own X-Forwarded-For is not its address.

With ``TRUSTED_PROXIES=0`` (the default, for a gunicorn no proxy stands in
front of) the app takes the socket's address, whatever headers say, so a
client cannot dodge the login throttle by making up a new address each try.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port
from tests.deploy.conftest import DEPLOY_SETTINGS
from tests.deploy.test_nginx import LIMIT, log_in
from tests.servers import Server, server_env, start_server


@pytest.fixture
def bare_gunicorn(tmp_path: Path, mysql_database: str, redis_prefix: str) -> Iterator[Server]:
    settings = {**DEPLOY_SETTINGS, "TRUSTED_PROXIES": "0", "TRANSFER_ACCEL_REDIRECT": ""}
    env = server_env("gthread", tmp_path, mysql_database, redis_prefix, **settings)
    server = start_server("gthread", env, free_port())
    yield server
    server.stop()


class PlainHttpSession(requests.Session):
    """A client that sends the production (Secure) session cookie over plain HTTP, as a
    script talking to an exposed gunicorn on 127.0.0.1 could."""

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def, override]
        response = super().send(request, **kwargs)
        for cookie in self.cookies:
            cookie.secure = False
        return response


def test_a_forwarded_address_sent_straight_to_gunicorn_is_not_trusted(
    bare_gunicorn: Server,
) -> None:
    client = PlainHttpSession()
    client.trust_env = False
    for i in range(LIMIT):
        forged = {"X-Forwarded-For": f"203.0.113.{i}"}
        assert log_in(client, bare_gunicorn.url, f"direct{i}", **forged).status_code == 401
    forged = {"X-Forwarded-For": "203.0.113.200"}
    assert log_in(client, bare_gunicorn.url, "direct-more", **forged).status_code == 429
