"""The site as deployed: a real nginx on the shipped config in front of a real gunicorn.

One deployment per test module (starting it costs a migration and two
servers): gunicorn with the production settings the deploy guide sets
(``TRUSTED_PROXIES=1``, ``TRANSFER_ACCEL_REDIRECT=/_transfer/``) on MariaDB
and Redis, behind nginx speaking TLS with a self-signed certificate. Tests
that need nginx skip with the reason when it is not installed, or fail under
``REQUIRE_SERVICES=1`` (CI), like every other service.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from requests.adapters import HTTPAdapter

from project import create_app
from project.extensions import db
from tests.conftest import (
    REDIS_URL,
    free_port,
    new_mysql_database,
    new_redis_prefix,
    service_missing,
)
from tests.deploy import nginx
from tests.servers import Server, server_env, start_server
from tests.transfer.conftest import self_signed_certificate

ACCEL_PREFIX = "/_transfer/"


@dataclass
class Deployment:
    nginx: nginx.Nginx
    gunicorn: Server
    cert: Path  # the self-signed certificate nginx serves (also its own CA)
    media: Path
    overrides: dict[str, Any]  # the same database, Redis and MEDIA_ROOT, for create_app

    @property
    def url(self) -> str:
        return self.nginx.url

    @contextlib.contextmanager
    def app_context(self) -> Iterator[Flask]:
        """An app on the deployment's database, to arrange what a test needs."""
        app = create_app("test", overrides=self.overrides, environ={})
        try:
            with app.app_context():
                yield app
        finally:
            db.close()
            for name in ("broker", "redis"):
                if app.extensions.get(name) is not None:
                    app.extensions[name].close()

    def session(self, source: str | None = None) -> requests.Session:
        """An HTTPS client that trusts nginx's certificate, from *source* (a 127.x address)."""
        client = requests.Session()
        client.trust_env = False  # REQUESTS_CA_BUNDLE would win over verify, proxies over us
        client.verify = str(self.cert)
        if source is not None:
            client.mount("https://", SourceAdapter(source))
        return client


class SourceAdapter(HTTPAdapter):
    """Connections from one local address: to nginx, a client other than 127.0.0.1."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def require_nginx() -> str:
    if nginx.NGINX is None:
        service_missing(
            "nginx (Debian package 'nginx'; .ci/run installs it)", FileNotFoundError("nginx")
        )
    assert nginx.NGINX is not None
    return nginx.NGINX


#: The production settings a deploy behind nginx uses, plus what keeps the tests quick.
DEPLOY_SETTINGS = {
    "TRUSTED_PROXIES": "1",
    "TRANSFER_ACCEL_REDIRECT": ACCEL_PREFIX,
    "LOGIN_LIMIT_ADDRESS": "5 per minute",
    "ARGON2_TIME_COST": "1",
    "ARGON2_MEMORY_KIB": "1024",
    "ARGON2_PARALLELISM": "1",
    "GUNICORN_WORKERS": "2",
}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    binary = require_nginx()
    tmp = tmp_path_factory.mktemp("deploy")
    media = tmp / "media"
    cert, key = self_signed_certificate(tmp)
    with new_mysql_database("test_deploy") as database, new_redis_prefix() as prefix:
        env = server_env("gthread", tmp, database, prefix, MEDIA_ROOT=str(media), **DEPLOY_SETTINGS)
        gunicorn = start_server("gthread", env, free_port())
        layout = nginx.Layout(
            upstream=gunicorn.url.removeprefix("http://"),
            http_port=free_port(),
            https_port=free_port(),
            media=media,
            cert=cert,
            key=key,
            webroot=tmp / "webroot",
        )
        try:
            proxy = nginx.start(binary, layout, tmp / "nginx")
        except BaseException:
            gunicorn.stop(signal.SIGKILL)
            raise
        overrides = {
            "DATABASE_URL": database,
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": prefix,
            "MEDIA_ROOT": str(media),
            "INSTANCE_PATH": str(tmp / "instance"),
        }
        try:
            yield Deployment(proxy, gunicorn, cert, media, overrides)
        finally:
            proxy.stop()
            gunicorn.stop()
