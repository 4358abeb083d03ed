"""``manage.py``: the project's command line, in the manner of Django's.

One click group holds the project's commands (``runserver``, ``migrate``,
``showmigrations``, ``routes``, ``shell``, ``check``); each installed app adds
its own to ``app.cli`` in its ``init_app``, and they are listed beside these.
``python manage.py --help`` shows every command with a one-line description.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import IO, Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, NoAppException, routes_command, shell_command, with_appcontext
from werkzeug.serving import WSGIRequestHandler

from project.db import DatabaseError
from project.lifecycle import run_shutdown_hooks
from project.settings import ConfigurationError


class SettingsError(NoAppException):
    """A settings error shown as one line, without click's usage banner."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.secho(f"Error: {self.format_message()}", err=True, fg="red")


def _load_app() -> Flask:
    from project import create_app

    try:
        return create_app()
    except ConfigurationError as exc:
        raise SettingsError(str(exc)) from None


def _app() -> Flask:
    return current_app._get_current_object()  # type: ignore[attr-defined]


def _failure(exc: Exception) -> click.ClickException:
    """A database or migration error as a one-line command failure."""
    return click.ClickException(str(exc).splitlines()[0])


@click.command("migrate")
@with_appcontext
def migrate_command() -> None:
    """Apply the database migrations that have not been applied yet."""
    from project import migrations

    try:
        applied = migrations.migrate(_app())
    except (DatabaseError, migrations.MigrationError) as exc:
        raise _failure(exc) from None
    if not applied:
        click.echo("No migrations to apply.")
    for migration_id in applied:
        click.echo(f"Applied {migration_id}")


@click.command("showmigrations")
@with_appcontext
def showmigrations_command() -> None:
    """List every migration, [X] when applied, in the order they apply."""
    from project import migrations

    try:
        statuses = migrations.status(_app())
    except (DatabaseError, migrations.MigrationError) as exc:
        raise _failure(exc) from None
    for status in statuses:
        click.echo(f"[{'X' if status.applied else ' '}] {status.id}")


@click.command("check")
@with_appcontext
def check_command() -> None:
    """Check settings, database, Redis and the frames codec; exit 1 if one fails."""
    from project import migrations
    from project.health import run_checks

    app = _app()
    click.echo(f"settings: ok ({app.config['APP_ENV']}, database {app.config['DATABASE'].display})")
    failed = False
    for check in run_checks(app):
        failed |= not check.ok
        mark = "ok" if check.ok else "FAILED"
        click.echo(f"{check.name}: {mark} ({check.detail})")
    if not failed:
        try:
            pending = [s.id for s in migrations.status(app) if not s.applied]
        except migrations.MigrationError as exc:
            click.echo(f"migrations: FAILED ({exc})")
            failed = True
        else:
            if pending:
                click.echo(
                    f"migrations: {len(pending)} unapplied ({', '.join(pending)}); run migrate"
                )
            else:
                click.echo("migrations: ok (all applied)")
    if failed:
        sys.exit(1)


class HandshakeTimeoutHandler(WSGIRequestHandler):
    """A client gets this long to send its request line and headers (slowloris guard);
    a WebSocket then sets its own timeouts on the socket."""

    timeout = 30


@click.command("runserver")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--reload/--no-reload",
    default=None,
    help="Restart when code changes (default: on in development).",
)
@with_appcontext
def runserver_command(host: str, port: int, reload: bool | None) -> None:
    """Run the development server (threaded; migrates the embedded database)."""
    from werkzeug.serving import is_running_from_reloader, run_simple

    from project import migrations

    app = _app()
    if not is_running_from_reloader():
        try:
            if app.config["DATABASE"].engine == "sqlite":
                for migration_id in migrations.migrate(app):
                    click.echo(f"Applied {migration_id}")
            else:
                pending = [s.id for s in migrations.status(app) if not s.applied]
                if pending:
                    click.secho(
                        f"You have {len(pending)} unapplied migration(s): run "
                        "'python manage.py migrate'.",
                        fg="yellow",
                    )
        except (DatabaseError, migrations.MigrationError) as exc:
            raise _failure(exc) from None
    use_reloader = app.debug if reload is None else reload
    # SIGTERM (systemd, docker stop, kill) stops the server the way Ctrl-C does, so it
    # too says goodbye to its sockets (1001) instead of dropping them. SIGINT is set
    # as well: a process started in the background by a shell (`make test &`, CI)
    # inherits SIGINT ignored, and Python then installs no Ctrl-C handler of its own,
    # so the server did not stop at all (the stop test that failed on busy runs).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    try:
        # The interactive debugger is never on: it executes code for whoever can reach the port.
        run_simple(
            host,
            port,
            app,
            threaded=True,
            use_reloader=use_reloader,
            use_debugger=False,
            request_handler=HandshakeTimeoutHandler,
        )
    finally:
        run_shutdown_hooks()  # e.g. WebSockets get a 1001 close before the process ends


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def build_cli() -> FlaskGroup:
    cli = FlaskGroup(
        name="manage.py",
        help="Manage the project: run it, migrate it, inspect it.",
        create_app=_load_app,
        add_default_commands=False,
        add_version_option=False,
        load_dotenv=False,
        set_debug_flag=False,
    )
    for command in (
        runserver_command,
        migrate_command,
        showmigrations_command,
        check_command,
        routes_command,
        shell_command,
    ):
        cli.add_command(command)
    return cli


def main() -> None:
    build_cli().main(prog_name="manage.py")
