"""Account commands: ``createsuperuser``, ``changepassword``, ``apikey create|list|revoke``."""

from __future__ import annotations

import re
import sys

import click
from flask import Flask
from flask.cli import with_appcontext

from apps.accounts import apikeys, models
from apps.accounts.forms import USERNAME_CHARS
from apps.accounts.passwords import hash_password, password_problems


def _read_password(from_stdin: bool, username: str, email: str) -> str:
    """A new password: one line from stdin for scripts, or asked twice at the prompt."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    problems = password_problems(password, username=username, email=email)
    if problems:
        raise click.BadParameter(" ".join(problems), param_hint="password")
    return password


def _check_username(username: str) -> str:
    if not (3 <= len(username) <= 150 and re.match(USERNAME_CHARS, username)):
        raise click.BadParameter(
            "use 3 to 150 letters, digits and . + - _", param_hint="--username"
        )
    if models.username_taken(username):
        raise click.BadParameter(f"{username!r} is taken", param_hint="--username")
    return username


def _check_email(email: str) -> str:
    from email_validator import EmailNotValidError, validate_email

    try:
        email = validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise click.BadParameter(str(exc), param_hint="--email") from None
    if models.email_taken(email):
        raise click.BadParameter(f"{email!r} already has an account", param_hint="--email")
    return email


@click.command("createsuperuser")
@click.option("--username", help="Username (asked for when missing).")
@click.option("--email", help="Email address (asked for when missing).")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (for scripts).",
)
@with_appcontext
def createsuperuser_command(username: str | None, email: str | None, password_stdin: bool) -> None:
    """Create an administrator account."""
    username = _check_username(username or click.prompt("Username"))
    email = _check_email(email or click.prompt("Email"))
    password = _read_password(password_stdin, username, email)
    user = models.create_user(username, email, hash_password(password), is_admin=True)
    models.audit("user.createsuperuser", actor_id=None, target_user_id=user.id, ip="cli")
    click.echo(f"Superuser {user.username!r} created.")


@click.command("changepassword")
@click.argument("username")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the new password from the first line of standard input.",
)
@with_appcontext
def changepassword_command(username: str, password_stdin: bool) -> None:
    """Set a new password for USERNAME (ends the user's sessions)."""
    from apps.accounts import user_sessions

    user = models.get_user_by_login(username)
    if user is None:
        raise click.BadParameter(f"no user {username!r}", param_hint="USERNAME")
    password = _read_password(password_stdin, user.username, user.email)
    models.set_password_hash(user.id, hash_password(password))
    user_sessions.end_all_sessions(user.id)
    models.audit("user.password_change", actor_id=None, target_user_id=user.id, ip="cli")
    click.echo(f"Password changed for {user.username!r}.")


@click.group("apikey")
def apikey_group() -> None:
    """Create, list and revoke API keys."""


def _user(username: str) -> models.User:
    user = models.get_user_by_login(username)
    if user is None:
        raise click.BadParameter(f"no user {username!r}", param_hint="USER")
    return user


@apikey_group.command("create")
@click.argument("user")
@click.option("--label", default="cli", show_default=True, help="What the key is for.")
@with_appcontext
def apikey_create(user: str, label: str) -> None:
    """Create a key for USER and print it (shown only once)."""
    owner = _user(user)
    key, full = apikeys.create_key(owner.id, label)
    models.audit(
        "apikey.create",
        actor_id=None,
        target_user_id=owner.id,
        detail=f"{key.key_id} {key.label}",
        ip="cli",
    )
    click.echo(full)
    click.echo(
        f"API key {key.key_id} ({key.label}) created for {owner.username}; "
        "store it now, it is not shown again.",
        err=True,
    )


@apikey_group.command("list")
@click.argument("user")
@with_appcontext
def apikey_list(user: str) -> None:
    """List USER's keys (never their secrets)."""
    for key in apikeys.list_keys(_user(user).id):
        state = "active" if key.active else f"revoked {key.revoked_at:%Y-%m-%d %H:%M}"
        used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
        click.echo(
            f"{key.id}\t{key.key_id}\t{key.label}\tcreated {key.created_at:%Y-%m-%d}"
            f"\tlast used {used}\t{state}"
        )


@apikey_group.command("revoke")
@click.argument("user")
@click.argument("key_id")
@with_appcontext
def apikey_revoke(user: str, key_id: str) -> None:
    """Revoke USER's key KEY_ID (the id shown by 'apikey list')."""
    owner = _user(user)
    match = next((k for k in apikeys.list_keys(owner.id) if key_id in (k.key_id, str(k.id))), None)
    if match is None or not apikeys.revoke_key(match.id, user_id=owner.id):
        raise click.ClickException(f"{owner.username} has no active key {key_id!r}")
    models.audit(
        "apikey.revoke", actor_id=None, target_user_id=owner.id, detail=match.key_id, ip="cli"
    )
    click.echo(f"Revoked {match.key_id}.")


@click.group("twofactor")
def twofactor_group() -> None:
    """Manage users' second factors (TOTP)."""


@twofactor_group.command("reset")
@click.argument("user")
@with_appcontext
def twofactor_reset(user: str) -> None:
    """Remove USER's second factor (a lost device) and end their sessions."""
    from apps.accounts import twofactor

    owner = _user(user)
    if not twofactor.reset(owner.id, actor_id=None, ip="cli"):
        raise click.ClickException(f"{owner.username} has no second factor")
    click.echo(
        f"Second factor removed for {owner.username!r}; their sessions have been ended. "
        "They sign in with the password and can set up a new one at /accounts/2fa."
    )


def init_cli(app: Flask) -> None:
    for command in (createsuperuser_command, changepassword_command, apikey_group, twofactor_group):
        app.cli.add_command(command)
