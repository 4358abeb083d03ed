"""Settings: each bad value is refused with one line that names the variable to fix."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from project.settings import ConfigurationError, load_settings

ROOT = Path(__file__).resolve().parents[2]
GOOD_SECRET = "x" * 48


def settings(tmp_path: Path, env: str = "development", **environ: str) -> dict:
    return load_settings(env, environ=environ, instance_path=tmp_path)


def error_of(tmp_path: Path, env: str = "development", **environ: str) -> str:
    with pytest.raises(ConfigurationError) as info:
        settings(tmp_path, env, **environ)
    message = str(info.value)
    assert "\n" not in message, "settings errors are one line"
    return message


def test_production_refuses_to_start_without_secret_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, "production")
    assert message.startswith("SECRET_KEY is not set")
    assert "export SECRET_KEY=" in message


def test_production_refuses_a_short_secret_key(tmp_path: Path) -> None:
    assert error_of(tmp_path, "production", SECRET_KEY="short").startswith(
        "SECRET_KEY is too short"
    )


def test_production_hardens_cookies_and_transport(tmp_path: Path) -> None:
    config = settings(tmp_path, "production", SECRET_KEY=GOOD_SECRET, SITE_URL="https://a.example")
    assert config["SESSION_COOKIE_SECURE"] is True
    assert config["SESSION_COOKIE_HTTPONLY"] is True
    assert config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert config["HSTS_SECONDS"] >= 31536000
    assert config["DEBUG"] is False


def test_production_admins_need_a_second_factor_unless_turned_off(tmp_path: Path) -> None:
    base = {"SECRET_KEY": GOOD_SECRET, "SITE_URL": "https://a.example"}
    assert settings(tmp_path, "production", **base)["ADMIN_REQUIRE_2FA"] is True
    assert settings(tmp_path, "development")["ADMIN_REQUIRE_2FA"] is False
    off = settings(tmp_path, "production", **base, ADMIN_REQUIRE_2FA="0")
    assert off["ADMIN_REQUIRE_2FA"] is False
    assert error_of(tmp_path, "production", **base, ADMIN_REQUIRE_2FA="maybe").startswith(
        "ADMIN_REQUIRE_2FA='maybe' is not a boolean"
    )


def test_production_refuses_to_start_without_site_url(tmp_path: Path) -> None:
    """Stops a production site from building emailed links out of the request's Host."""
    message = error_of(tmp_path, "production", SECRET_KEY=GOOD_SECRET)
    assert message.startswith("SITE_URL is not set")


@pytest.mark.parametrize(
    "value",
    ["example.com", "ftp://example.com", "https://", "https://a.example/?x=1", "http://a:b"],
)
def test_a_malformed_site_url_is_refused(tmp_path: Path, value: str) -> None:
    assert error_of(tmp_path, SITE_URL=value).startswith("SITE_URL: ")


def test_the_site_url_host_is_trusted_and_links_are_built_on_it(tmp_path: Path) -> None:
    config = settings(tmp_path, SITE_URL="https://Files.Example.com/", TRUSTED_HOSTS="a.example")
    assert config["SITE_URL"] == "https://files.example.com"
    assert config["TRUSTED_HOSTS"] == ["a.example", "files.example.com"]
    assert settings(tmp_path)["TRUSTED_HOSTS"] == ["localhost", "127.0.0.1"]


def test_development_generates_a_secret_once_and_keeps_it_private(tmp_path: Path) -> None:
    first = settings(tmp_path)["SECRET_KEY"]
    second = settings(tmp_path)["SECRET_KEY"]
    assert first == second and len(first) >= 32
    mode = stat.S_IMODE((tmp_path / "secret_key").stat().st_mode)
    assert mode == 0o600


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u@h/db", "unsupported database 'postgres'"),
        ("mysql://root@127.0.0.1:3306/", "names no database"),
        ("mysql://root@127.0.0.1:notaport/db", "port"),
        ("mysql://root@127.0.0.1:3306/db?sslmode=on", "unknown option(s) sslmode"),
        ("sqlite://host/file.db", "has a host"),
        ("sqlite:///", "names no file"),
        ("just-a-path.db", "unsupported database"),
    ],
)
def test_bad_database_url_names_the_variable(tmp_path: Path, url: str, expected: str) -> None:
    message = error_of(tmp_path, DATABASE_URL=url)
    assert message.startswith("DATABASE_URL: ")
    assert expected in message


def test_database_url_error_never_shows_the_password(tmp_path: Path) -> None:
    message = error_of(tmp_path, DATABASE_URL="mysql://root:hunter2@127.0.0.1:99999x/db")
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379", "redis://127.0.0.1:port/0", "redis://h/x"]
)
def test_bad_redis_url_names_the_variable(tmp_path: Path, url: str) -> None:
    assert error_of(tmp_path, REDIS_URL=url).startswith("REDIS_URL: ")


def test_urls_are_parsed_once_into_typed_values(tmp_path: Path) -> None:
    config = settings(
        tmp_path,
        DATABASE_URL="mysql://app:p%40ss@db.internal:3307/site?charset=utf8mb4",
        REDIS_URL="redis://127.0.0.1:6379/2",
    )
    url = config["DATABASE"]
    assert (url.engine, url.host, url.port, url.user, url.password, url.name) == (
        "mysql",
        "db.internal",
        3307,
        "app",
        "p@ss",
        "site",
    )
    assert "p@ss" not in url.display and "p@ss" not in repr(url)
    assert config["REDIS"].url == "redis://127.0.0.1:6379/2"


def test_relative_sqlite_path_is_taken_from_the_project_root(tmp_path: Path) -> None:
    config = settings(tmp_path, DATABASE_URL="sqlite:///instance/x.db")
    assert config["DATABASE"].path == str(ROOT / "instance" / "x.db")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("APP_ENV", "staging", "APP_ENV='staging' is not one of"),
        ("DB_POOL_SIZE", "many", "DB_POOL_SIZE='many' is not a whole number"),
        ("SESSION_LIFETIME_SECONDS", "0", "must be greater than zero"),
        ("TRANSFER_ACCEL_REDIRECT", "_transfer", "is not a location prefix like /_transfer/"),
        ("TRANSFER_ACCEL_REDIRECT", "/a b/", "is not a location prefix"),
    ],
)
def test_other_bad_values(tmp_path: Path, name: str, value: str, expected: str) -> None:
    environ = {name: value}
    env = None if name == "APP_ENV" else "development"
    with pytest.raises(ConfigurationError, match=expected):
        load_settings(env, environ=environ, instance_path=tmp_path)


def test_the_accel_prefix_ends_with_a_slash(tmp_path: Path) -> None:
    assert settings(tmp_path, TRANSFER_ACCEL_REDIRECT="/_transfer")["TRANSFER_ACCEL_REDIRECT"] == (
        "/_transfer/"
    )
    assert settings(tmp_path)["TRANSFER_ACCEL_REDIRECT"] == ""


def test_session_lifetime_is_configurable(tmp_path: Path) -> None:
    config = settings(tmp_path, SESSION_LIFETIME_SECONDS="600")
    assert config["PERMANENT_SESSION_LIFETIME"].total_seconds() == 600


def clean_env(**extra: str) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APP_", "SECRET", "DATABASE", "REDIS"))
    }
    return {**keep, **extra}


def test_manage_py_prints_one_line_for_a_missing_secret_key() -> None:
    run = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=clean_env(APP_ENV="production"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [
        line for line in run.stderr.strip().splitlines() if "SECRET_KEY is not set" in line
    ]
    assert "Traceback" not in run.stderr


def test_gunicorn_refuses_to_start_without_secret_key() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            "127.0.0.1:0",
            "project.wsgi:app",
        ],
        cwd=ROOT,
        env=clean_env(APP_ENV="production"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "Error: SECRET_KEY is not set" in run.stderr
    assert "Traceback" not in run.stderr
