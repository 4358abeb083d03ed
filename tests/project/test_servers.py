"""The app under its real servers: gunicorn with the production config, and a MariaDB restart."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from tests.conftest import REDIS_URL, free_port, http_get, service_missing, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gunicorn_server(mysql_database: str, redis_prefix: str, tmp_path: Path) -> Iterator[str]:
    """The app under gunicorn with gunicorn.conf.py, in production mode, on MariaDB + Redis."""
    port = free_port()
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": "k" * 48,
        "DATABASE_URL": mysql_database,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": redis_prefix,
        "SITE_URL": f"http://127.0.0.1:{port}",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_ACCESS_LOG": str(tmp_path / "access.log"),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "project.wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert (tmp_path / "access.log").read_text().count("GET /") >= 1, "access log is written"


def test_gunicorn_serves_pages_and_health(gunicorn_server: str) -> None:
    status, body = http_get(gunicorn_server + "/healthz")
    assert status == 200
    health = json.loads(body)
    assert health["status"] == "ok" and health["db"] == "ok" and health["redis"] == "ok"
    for _ in range(20):  # across both workers
        status, body = http_get(gunicorn_server + "/")
        assert status == 200 and "Welcome" in body
    status, _ = http_get(gunicorn_server + "/no-such-page")
    assert status == 404


def test_the_access_log_holds_no_reset_or_share_token(gunicorn_server: str, tmp_path: Path) -> None:
    """Stops whoever reads the logs from taking over an account with a logged reset link, or
    fetching a private file with a logged share link (valid up to 30 days)."""
    reset_token, share_token = "RESETsecret0123456789abcdef", "SHAREsecret0123456789abcdef"
    http_get(f"{gunicorn_server}/accounts/password/reset/{reset_token}")
    http_get(f"{gunicorn_server}/transfer/files/{'a' * 32}/download?share={share_token}&x=1")
    log_file = tmp_path / "access.log"
    deadline = time.monotonic() + 10
    while log_file.read_text().count("[redacted]") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    logged = log_file.read_text()
    assert "/accounts/password/reset/[redacted]" in logged
    assert "?share=[redacted]&x=1" in logged
    assert reset_token not in logged and share_token not in logged


# -- a private MariaDB server that the test may stop and start ------------------------------


class PrivateMariaDB:
    """A throwaway mariadbd on its own port and data directory (the shared one stays up)."""

    def __init__(self, datadir: Path, port: int) -> None:
        self.datadir, self.port = datadir, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.datadir}/mysqld.sock",
                "--user=root",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                f"--pid-file={self.datadir}/pid",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                pymysql.connect(
                    host="127.0.0.1", port=self.port, user="root", connect_timeout=1
                ).close()
                return
            except pymysql.err.OperationalError:
                time.sleep(0.2)
        raise AssertionError("the private MariaDB did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
            self.proc = None


@pytest.fixture
def private_mariadb(tmp_path: Path) -> Iterator[PrivateMariaDB]:
    install = shutil.which("mariadb-install-db")
    if (
        install is None
        or shutil.which("mariadbd") is None
        and not Path("/usr/sbin/mariadbd").exists()
    ):
        service_missing("mariadbd and mariadb-install-db", FileNotFoundError("not installed"))
    os.environ["PATH"] += os.pathsep + "/usr/sbin"
    datadir = tmp_path / "mariadb"
    subprocess.run(
        [
            install,
            "--no-defaults",
            f"--datadir={datadir}",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    server = PrivateMariaDB(datadir, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_the_pool_survives_a_database_restart(private_mariadb: PrivateMariaDB, make_app) -> None:  # type: ignore[no-untyped-def]
    admin = pymysql.connect(
        host="127.0.0.1", port=private_mariadb.port, user="root", autocommit=True
    )
    with admin.cursor() as cur:
        cur.execute("CREATE DATABASE app")
    admin.close()
    app = make_app(
        DATABASE_URL=f"mysql://root@127.0.0.1:{private_mariadb.port}/app", REDIS_URL=None
    )
    client = app.test_client()
    assert client.get("/_probe/row").json == {"n": 0}

    private_mariadb.stop()
    response = client.get("/_probe/row")
    assert response.status_code == 503  # down: a clear "temporarily unavailable"
    assert client.get("/healthz").json["failing"] == ["db"]

    private_mariadb.start()
    for _ in range(5):  # back: every request succeeds again, no restart of the app needed
        response = client.get("/_probe/row")
        assert response.status_code == 200 and response.json == {"n": 0}
    assert client.get("/healthz").status_code == 200
