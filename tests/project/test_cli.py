"""manage.py: every command documented, usable from scripts, clear about bad input."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, http_get, wait_for

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["runserver", "migrate", "showmigrations", "routes", "shell", "check"]


def manage(
    *args: str, tmp_path: Path, timeout: int = 60, **env: str
) -> subprocess.CompletedProcess:
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APP_ENV", "SECRET_KEY", "DATABASE_URL", "REDIS_URL"))
    }
    environ.setdefault("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    environ.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_every_command_with_a_description(tmp_path: Path) -> None:
    run = manage("--help", tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    for command in COMMANDS:
        line = next(
            (ln for ln in run.stdout.splitlines() if ln.strip().startswith(command + " ")), ""
        )
        assert line.strip() != command and len(line.split()) > 1, f"{command} has no description"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(tmp_path: Path, command: str) -> None:
    run = manage(command, "--help", tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Usage: manage.py " + command in run.stdout


def test_migrate_showmigrations_and_check_on_sqlite(tmp_path: Path) -> None:
    assert "[ ] accounts:0001_users" in manage("showmigrations", tmp_path=tmp_path).stdout
    check = manage("check", tmp_path=tmp_path)
    assert check.returncode == 0 and "unapplied (accounts:0001_users, " in check.stdout
    first = manage("migrate", tmp_path=tmp_path)
    assert first.returncode == 0 and "Applied accounts:0001_users" in first.stdout
    # Only what a newcomer needs: no stray query result printed by a migration.
    assert all(line.startswith("Applied ") for line in first.stdout.splitlines()), first.stdout
    again = manage("migrate", tmp_path=tmp_path)
    assert again.returncode == 0 and "No migrations to apply." in again.stdout
    assert "[X] accounts:0001_users" in manage("showmigrations", tmp_path=tmp_path).stdout
    check = manage("check", tmp_path=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    for part in ("settings: ok", "db: ok (sqlite)", "redis: ok", "frames: ok", "migrations: ok"):
        assert part in check.stdout


def test_migrate_and_check_on_mariadb(mysql_database: str, tmp_path: Path) -> None:
    run = manage("migrate", tmp_path=tmp_path, DATABASE_URL=mysql_database)
    assert run.returncode == 0 and "Applied accounts:0001_users" in run.stdout, run.stderr
    check = manage(
        "check",
        tmp_path=tmp_path,
        DATABASE_URL=mysql_database,
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    assert check.returncode == 0, check.stdout
    assert "db: ok (mysql)" in check.stdout and "redis: ok (ok)" in check.stdout


def test_routes_lists_the_urls(tmp_path: Path) -> None:
    run = manage("routes", tmp_path=tmp_path)
    assert run.returncode == 0
    assert "/healthz" in run.stdout and "core.home" in run.stdout


def test_shell_runs_in_the_app_context(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "manage.py", "shell"],
        cwd=ROOT,
        input="print('engine=' + app.config['DATABASE'].engine)\n",
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "engine=sqlite" in run.stdout


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DATABASE_URL": "postgres://u@h/db"}, "Error: DATABASE_URL: unsupported database"),
        ({"REDIS_URL": "http://x"}, "Error: REDIS_URL:"),
        ({"APP_ENV": "production"}, "Error: SECRET_KEY is not set"),
    ],
)
def test_bad_settings_give_one_line_and_a_usage_exit_code(
    tmp_path: Path, env: dict, expected: str
) -> None:
    run = manage("check", tmp_path=tmp_path, **env)
    assert run.returncode == 2
    assert run.stderr.strip().startswith(expected)
    assert len(run.stderr.strip().splitlines()) == 1
    assert "Traceback" not in run.stderr


def test_an_unreachable_database_fails_migrate_with_one_line(tmp_path: Path) -> None:
    run = manage("migrate", tmp_path=tmp_path, DATABASE_URL="mysql://root@127.0.0.1:1/x")
    assert run.returncode == 1
    assert run.stderr.startswith(
        "Error: DATABASE_URL: cannot connect to mysql://root@127.0.0.1:1/x"
    )
    assert "Traceback" not in run.stderr


def test_check_fails_when_redis_is_down(tmp_path: Path) -> None:
    run = manage("check", tmp_path=tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
    assert run.returncode == 1
    assert "redis: FAILED (unreachable" in run.stdout


def test_runserver_migrates_the_embedded_database_and_serves(tmp_path: Path) -> None:
    port = free_port()
    database = tmp_path / "first-start.db"
    environ = {**os.environ, "DATABASE_URL": f"sqlite:///{database}"}
    environ.pop("APP_ENV", None)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--port", str(port), "--no-reload"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/")
        status, body = http_get(f"http://127.0.0.1:{port}/")
        assert status == 200 and "Welcome" in body
        with sqlite3.connect(database) as con:
            assert con.execute("SELECT COUNT(*) FROM users").fetchone() == (0,)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert "Applied accounts:0001_users" in output


def test_runserver_rejects_a_bad_port(tmp_path: Path) -> None:
    run = manage("runserver", "--port", "70000", tmp_path=tmp_path)
    assert run.returncode == 2 and "70000 is not in the range" in run.stderr
