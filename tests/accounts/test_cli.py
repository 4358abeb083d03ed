"""Account commands in manage.py: what an operator types, and what the site then does.

Each test runs ``python manage.py ...`` in a subprocess against a migrated
database and checks the result through a test app on the same database: the
superuser can log in, the new password works and the old one does not, the
printed API key opens the API until it is revoked.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from apps.accounts import apikeys, audit_log, models
from apps.accounts.passwords import hash_password, verify_password
from project import create_app
from project.extensions import db
from tests.conftest import PASSWORD, REDIS_URL, log_in
from tests.probe import probe

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEY = secrets.token_urlsafe(48)  # shared by the commands and the test apps
STRONG = "Strong-Pass-123"
KEY = re.compile(r"fmk_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")


def manage(
    *args: str, database: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """Run manage.py as an operator would, detached from any terminal (no /dev/tty)."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APP_ENV", "SECRET_KEY", "DATABASE_URL", "REDIS_"))
    }
    environ.update(DATABASE_URL=database, SECRET_KEY=SECRET_KEY, **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )


def error_lines(run: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in run.stderr, run.stderr
    return [line for line in run.stderr.splitlines() if line.startswith("Error:")]


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    """A migrated SQLite database; its URL."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    run = manage("migrate", database=url)
    assert run.returncode == 0, run.stderr
    return url


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Build a test app on a given database (what the web server would see)."""
    apps: list[Flask] = []

    def build(database: str, **overrides: Any) -> Flask:
        settings = {
            "DATABASE_URL": database,
            "REDIS_URL": None,
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "SECRET_KEY": SECRET_KEY,
            **overrides,
        }
        app = create_app("test", overrides=settings, environ={})
        app.register_blueprint(probe)
        apps.append(app)
        return app

    yield build
    db.close()
    for app in apps:
        if app.extensions.get("redis") is not None:
            app.extensions["redis"].close()


def find_user(app: Flask, login: str) -> models.User | None:
    with app.app_context():
        return models.get_user_by_login(login)


def can_log_in(app: Flask, login: str, password: str) -> bool:
    with app.app_context():
        user = models.get_user_by_login(login)
        return user is not None and verify_password(models.get_password_hash(user.id), password)


def user_count(app: Flask) -> int:
    with app.app_context():
        return int(db.fetch_value("SELECT COUNT(*) FROM users"))


def add_alice(app: Flask) -> int:
    with app.app_context():
        return models.create_user("alice", "alice@example.com", hash_password(PASSWORD)).id


# -- help -----------------------------------------------------------------------------------

COMMANDS = [
    ["createsuperuser"],
    ["changepassword"],
    ["apikey"],
    ["apikey", "create"],
    ["apikey", "list"],
    ["apikey", "revoke"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_each_account_command_has_help(tmp_path: Path, command: list[str]) -> None:
    run = manage(*command, "--help", database=f"sqlite:///{tmp_path / 'h.db'}")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Usage: manage.py " + " ".join(command))
    description = run.stdout.split("\n\n")[1].strip()
    assert description, "the command says what it does"


def test_createsuperuser_help_documents_its_options(tmp_path: Path) -> None:
    run = manage("createsuperuser", "--help", database=f"sqlite:///{tmp_path / 'h.db'}")
    for option in ("--username", "--email", "--password-stdin"):
        assert option in run.stdout


def test_manage_help_lists_the_account_commands(tmp_path: Path) -> None:
    run = manage("--help", database=f"sqlite:///{tmp_path / 'h.db'}")
    assert run.returncode == 0
    for command in ("createsuperuser", "changepassword", "apikey"):
        line = next((ln for ln in run.stdout.splitlines() if ln.strip().startswith(command)), "")
        assert len(line.split()) > 1, f"{command} is not listed with a description"


# -- createsuperuser ----------------------------------------------------------------------------


def createsuperuser(database: str, username: str, email: str, password: str = STRONG) -> Any:
    return manage(
        "createsuperuser",
        "--username",
        username,
        "--email",
        email,
        "--password-stdin",
        database=database,
        stdin=password + "\n",
    )


def test_createsuperuser_from_a_script_makes_an_admin_who_can_log_in(
    sqlite_db: str, site: Callable[..., Flask]
) -> None:
    run = createsuperuser(sqlite_db, "root_admin", "Root@Example.COM")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "Superuser 'root_admin' created."
    assert STRONG not in run.stdout + run.stderr

    app = site(sqlite_db)
    admin = find_user(app, "root_admin")
    assert admin is not None and admin.is_admin and admin.is_active
    assert admin.email == "root@example.com"
    client = app.test_client()
    assert log_in(client, "root_admin", STRONG).status_code == 302
    assert client.get("/admin/").status_code == 200
    with app.app_context():
        rows = audit_log.page(action="user.createsuperuser").rows
    assert [(r["target_user_id"], r["ip"]) for r in rows] == [(admin.id, "cli")]


@pytest.mark.parametrize(
    ("username", "email", "password", "field", "problem"),
    [
        ("a b", "a@example.com", STRONG, "--username", "letters, digits and . + - _"),
        ("ab", "a@example.com", STRONG, "--username", "3 to 150"),
        ("x" * 151, "a@example.com", STRONG, "--username", "3 to 150"),
        ("admin<script>", "a@example.com", STRONG, "--username", "letters, digits"),
        ("admin", "not-an-email", STRONG, "--email", "@-sign"),
        ("admin", "a@", STRONG, "--email", ""),
        ("admin", "a@example.com", "password", "password", "too common"),
        ("admin", "a@example.com", "Sh0rt!", "password", "at least 8 characters"),
        ("admin", "a@example.com", "12345678901234", "password", "more than digits"),
        ("admin", "a@example.com", "my-admin-pass-77", "password", "username or email"),
        ("admin", "a@example.com", "", "password", "at least 8 characters"),
    ],
    ids=[
        "space in username",
        "short username",
        "long username",
        "html in username",
        "bad email",
        "no domain",
        "common password",
        "short password",
        "digits only",
        "password has username",
        "empty password",
    ],
)
def test_createsuperuser_refuses_bad_input_with_one_clear_error_line(
    sqlite_db: str,
    site: Callable[..., Flask],
    username: str,
    email: str,
    password: str,
    field: str,
    problem: str,
) -> None:
    run = createsuperuser(sqlite_db, username, email, password)
    assert run.returncode == 2
    errors = error_lines(run)
    assert len(errors) == 1, run.stderr
    assert errors[0].startswith(f"Error: Invalid value for {field}: ")
    assert problem in errors[0]
    assert "created" not in run.stdout
    assert user_count(site(sqlite_db)) == 0


@pytest.mark.parametrize(
    ("username", "email", "message"),
    [
        ("ADMIN", "other@example.com", "Error: Invalid value for --username: 'ADMIN' is taken"),
        ("other", "ADMIN@example.com", "already has an account"),
    ],
)
def test_createsuperuser_refuses_a_taken_username_or_email(
    sqlite_db: str, site: Callable[..., Flask], username: str, email: str, message: str
) -> None:
    assert createsuperuser(sqlite_db, "admin", "admin@example.com").returncode == 0
    run = createsuperuser(sqlite_db, username, email)
    assert run.returncode == 2
    errors = error_lines(run)
    assert len(errors) == 1 and message in errors[0], run.stderr
    assert user_count(site(sqlite_db)) == 1


def test_createsuperuser_asks_for_what_is_missing(
    sqlite_db: str, site: Callable[..., Flask]
) -> None:
    answers = ["boss", "boss@example.com", STRONG, "A-Typo-Pass-456", STRONG, STRONG]
    run = manage("createsuperuser", database=sqlite_db, stdin="\n".join(answers) + "\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Username:" in run.stdout and "Email:" in run.stdout
    assert "do not match" in run.stdout + run.stderr  # the typo was caught and asked again
    assert "Superuser 'boss' created." in run.stdout
    assert STRONG not in run.stdout
    app = site(sqlite_db)
    boss = find_user(app, "boss")
    assert boss is not None and boss.is_admin and boss.email == "boss@example.com"
    assert can_log_in(app, "boss", STRONG)


def test_createsuperuser_gives_up_when_the_input_ends(
    sqlite_db: str, site: Callable[..., Flask]
) -> None:
    run = manage("createsuperuser", database=sqlite_db, stdin="boss\n")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert user_count(site(sqlite_db)) == 0


# -- changepassword ------------------------------------------------------------------------------


def test_changepassword_sets_a_new_password_and_ends_the_users_sessions(
    sqlite_db: str, site: Callable[..., Flask], redis_prefix: str
) -> None:
    sessions = {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": redis_prefix}
    app = site(sqlite_db, **sessions)
    add_alice(app)
    browser = app.test_client()
    assert log_in(browser, "alice").status_code == 302
    assert browser.get("/_probe/whoami").json == {"user": "alice"}

    new = "Fresh-Secret-2024x"
    run = manage(
        "changepassword",
        "ALICE",
        "--password-stdin",
        database=sqlite_db,
        stdin=new + "\n",
        **sessions,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "Password changed for 'alice'."
    assert log_in(app.test_client(), "alice", PASSWORD).status_code == 401
    assert log_in(app.test_client(), "alice", new).status_code == 302
    assert browser.get("/_probe/whoami").json == {"user": None}


def test_changepassword_refuses_a_weak_password_and_keeps_the_old_one(
    sqlite_db: str, site: Callable[..., Flask]
) -> None:
    app = site(sqlite_db)
    add_alice(app)
    run = manage("changepassword", "alice", "--password-stdin", database=sqlite_db, stdin="123\n")
    assert run.returncode == 2
    errors = error_lines(run)
    assert len(errors) == 1 and errors[0].startswith("Error: Invalid value for password:")
    assert can_log_in(app, "alice", PASSWORD)


def test_changepassword_for_an_unknown_user_is_an_error(
    sqlite_db: str, site: Callable[..., Flask]
) -> None:
    add_alice(site(sqlite_db))
    run = manage("changepassword", "ghost", "--password-stdin", database=sqlite_db, stdin=STRONG)
    assert run.returncode == 2
    assert error_lines(run) == ["Error: Invalid value for USERNAME: no user 'ghost'"]


# -- apikey ---------------------------------------------------------------------------------------


def test_apikey_create_list_and_revoke(sqlite_db: str, site: Callable[..., Flask]) -> None:
    app = site(sqlite_db)
    alice = add_alice(app)
    api = app.test_client()

    created = manage("apikey", "create", "alice", "--label", "x", database=sqlite_db)
    assert created.returncode == 0, created.stderr
    full = created.stdout.strip()
    match = KEY.fullmatch(full)
    assert match, "stdout is the key alone, ready for a script to capture"
    key_id = match.group(1)
    assert "store it now" in created.stderr and full not in created.stderr
    bearer = {"Authorization": f"Bearer {full}"}
    assert api.get("/_probe/whoami", headers=bearer).json == {"user": "alice"}
    with app.app_context():  # encrypted under the same SECRET_KEY as the site's
        assert apikeys.secret_for(key_id) == (alice, full.split("_", 2)[2].encode())

    listed = manage("apikey", "list", "alice", database=sqlite_db)
    assert listed.returncode == 0
    [line] = listed.stdout.splitlines()
    fields = line.split("\t")
    assert fields[1:3] == [key_id, "x"] and fields[-1] == "active"
    assert full.split("_", 2)[2] not in listed.stdout

    revoked = manage("apikey", "revoke", "alice", key_id, database=sqlite_db)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"Revoked {key_id}."
    assert api.get("/_probe/whoami", headers=bearer).status_code == 401
    [line] = manage("apikey", "list", "alice", database=sqlite_db).stdout.splitlines()
    assert line.split("\t")[-1].startswith("revoked ")

    again = manage("apikey", "revoke", "alice", key_id, database=sqlite_db)
    assert again.returncode == 1
    assert error_lines(again) == [f"Error: alice has no active key '{key_id}'"]


def test_apikey_revoke_accepts_the_listed_number_and_only_the_owners_keys(
    sqlite_db: str, site: Callable[..., Flask]
) -> None:
    app = site(sqlite_db)
    add_alice(app)
    with app.app_context():
        models.create_user("bob", "bob@example.com", "!")
    full = manage("apikey", "create", "alice", database=sqlite_db).stdout.strip()
    number = manage("apikey", "list", "alice", database=sqlite_db).stdout.split("\t")[0]
    assert "\tcli\t" in manage("apikey", "list", "alice", database=sqlite_db).stdout

    refused = manage("apikey", "revoke", "bob", number, database=sqlite_db)
    assert refused.returncode == 1
    with app.app_context():
        assert apikeys.authenticate(full) is not None

    assert manage("apikey", "revoke", "alice", number, database=sqlite_db).returncode == 0
    with app.app_context():
        assert apikeys.authenticate(full) is None


@pytest.mark.parametrize(
    "command", [["create", "ghost"], ["list", "ghost"], ["revoke", "ghost", "1"]], ids=" ".join
)
def test_apikey_for_an_unknown_user_is_an_error(sqlite_db: str, command: list[str]) -> None:
    run = manage("apikey", *command, database=sqlite_db)
    assert run.returncode == 2
    assert error_lines(run) == ["Error: Invalid value for USER: no user 'ghost'"]
    assert "fmk_" not in run.stdout


# -- MariaDB --------------------------------------------------------------------------------------


def test_the_account_commands_work_on_mariadb(
    mysql_database: str, site: Callable[..., Flask]
) -> None:
    assert manage("migrate", database=mysql_database).returncode == 0
    run = createsuperuser(mysql_database, "root_admin", "root@example.com")
    assert run.returncode == 0, run.stderr
    assert createsuperuser(mysql_database, "ROOT_ADMIN", "x@example.com").returncode == 2

    new = "Another-Strong-99"
    run = manage(
        "changepassword", "root_admin", "--password-stdin", database=mysql_database, stdin=new
    )
    assert run.returncode == 0, run.stderr
    full = manage("apikey", "create", "root_admin", database=mysql_database).stdout.strip()
    assert KEY.fullmatch(full)

    app = site(mysql_database)
    client = app.test_client()
    assert log_in(client, "root_admin", STRONG).status_code == 401
    assert log_in(client, "root_admin", new).status_code == 302
    assert client.get("/admin/").status_code == 200
    bearer = {"Authorization": f"Bearer {full}"}
    assert app.test_client().get("/_probe/whoami", headers=bearer).json == {"user": "root_admin"}
    assert user_count(app) == 1
