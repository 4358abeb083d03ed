"""The app's deployments, started as real processes: for tests that talk to a live server.

``manage.py runserver`` (werkzeug, embedded stack), and gunicorn with the
``gthread`` or ``gevent`` worker (MariaDB + Redis), each with ``/ws/echo`` on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REDIS_URL, wait_for

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s" * 48


@dataclass
class Server:
    kind: str
    url: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    @property
    def ws(self) -> str:
        return "ws" + self.url[4:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(kind: str, env: dict[str, str], port: int, log: Path | None = None) -> Server:
    """Start one deployment of the app and wait until it answers.

    With *log*, the server's stdout and stderr are appended to that file (for a test
    to read); without it they are dropped.
    """
    if kind == "runserver":
        command = [sys.executable, "manage.py", "runserver", "--port", str(port), "--no-reload"]
    else:
        env = {
            **env,
            "GUNICORN_WORKER_CLASS": kind,
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": env.get("GUNICORN_WORKERS", "2"),
            "GUNICORN_ACCESS_LOG": "/dev/null",
        }
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "project.wsgi:app"]
    if log is None:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    else:
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    server = Server(kind, f"http://127.0.0.1:{port}", proc, env)
    try:
        wait_for(server.url + "/healthz")
    except AssertionError:
        server.stop(signal.SIGKILL)
        raise
    return server


def server_env(
    kind: str,
    tmp_path: Path,
    mysql_url: str | None,
    prefix: str | None,
    *,
    redis_url: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of a deployment (migrated); *redis_url* defaults to the test Redis."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APP_ENV", "DATABASE_URL", "REDIS_URL", "SECRET_KEY"))
    }
    env.update(SECRET_KEY=SECRET, WEBSOCKET_ECHO="1", **extra)
    if kind == "runserver":
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'rt.db'}"
    else:
        assert mysql_url and prefix
        env.update(
            APP_ENV="production",
            SITE_URL="http://127.0.0.1",
            DATABASE_URL=mysql_url,
            REDIS_URL=redis_url or REDIS_URL,
            REDIS_KEY_PREFIX=prefix,
        )
    subprocess.run(
        [sys.executable, "manage.py", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    return env


def create_users(env: dict[str, str], *names: str) -> None:
    """Accounts (password PASSWORD, admins) in the deployment's database, by manage.py."""
    from tests.conftest import PASSWORD

    for name in names:
        subprocess.run(
            [sys.executable, "manage.py", "createsuperuser", "--username", name,
             "--email", f"{name}@example.com", "--password-stdin"],
            cwd=ROOT, env=env, input=PASSWORD + "\n", text=True, check=True, capture_output=True,
        )  # fmt: skip
