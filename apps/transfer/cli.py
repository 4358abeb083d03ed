"""Transfer commands: ``transfer cleanup``, ``transfer push``, ``transfer pull`` and
``transfer-server`` (the TCP fast path, :mod:`apps.transfer.tcp`).

``push`` and ``pull`` are thin: :mod:`apps.transfer.client` does the work,
and its own command line (``flaskmono-transfer``, :mod:`apps.transfer.client.cli`)
gives the options' help, their checks, the exit codes and the summary line;
here only the default server comes from the app's settings.
"""

from __future__ import annotations

import logging
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from apps.transfer import client, storage, tcp
from apps.transfer.client.cli import DEFAULTS, HELP, default_server, make_options, run

EXIT_CODES = "\b\n" + client.EXIT_CODES  # \b: click keeps the lines as they are

transfer = AppGroup("transfer", help="Move large files; clean up unfinished uploads.")


@transfer.command("cleanup")
@with_appcontext
def cleanup() -> None:
    """Delete expired unfinished uploads, orphaned bytes and dead share links.

    Safe to run at any time and from several hosts; schedule it (cron, a
    systemd timer) every hour or so: see the README.
    """
    report = storage.cleanup()
    click.echo(
        f"removed {report.expired_uploads} expired upload(s), {report.orphan_files} orphaned"
        f" file(s) and {report.dead_shares} dead share link(s)"
    )


def _client_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options push and pull share: where the server is and how to talk to it."""
    options = [
        click.option("--server", metavar="HOST:PORT", help=HELP["server"]),
        click.option("--http", "http_url", metavar="BASE_URL", help=HELP["http"]),
        click.option("--key", envvar="TRANSFER_API_KEY", show_envvar=True, help=HELP["key"]),
        click.option("--tls", is_flag=True, help=HELP["tls"]),
        click.option("--cafile", type=click.Path(exists=True, dir_okay=False), help=HELP["cafile"]),
        click.option(
            "--retries",
            default=DEFAULTS.retries,
            show_default=True,
            type=click.IntRange(0, 1000),
            help=HELP["retries"],
        ),
        click.option(
            "--timeout",
            default=DEFAULTS.timeout,
            show_default=True,
            type=click.FloatRange(min=0.1),
            help=HELP["timeout"],
        ),
        click.option("-q", "--quiet", is_flag=True, help=HELP["quiet"]),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _options(server: str | None, http_url: str | None, **options: Any) -> client.Options:
    """The client's options; the default server is this app's own (TRANSFER_SERVER_*)."""
    config = current_app.config
    try:
        return make_options(
            server=server
            or default_server(config["TRANSFER_SERVER_HOST"], config["TRANSFER_SERVER_PORT"]),
            http=http_url,
            **options,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _run(action: Callable[[], client.Outcome], verb: str, quiet: bool) -> client.Outcome:
    return run(action, verb, quiet, lambda line: click.secho(line, err=True, fg="red"))


@transfer.command("push", help=HELP["push"], epilog=EXIT_CODES)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_client_options
@with_appcontext
def push(file: Path, **options: Any) -> None:
    settings = _options(**options)
    outcome = _run(lambda: client.push(settings, file), "pushed", options["quiet"])
    click.echo(outcome.file_id)


@transfer.command("pull", help=HELP["pull"], epilog=EXIT_CODES)
@click.argument("file_id", metavar="ID")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help=HELP["output"],
)
@_client_options
@with_appcontext
def pull(file_id: str, output: Path | None, **options: Any) -> None:
    settings = _options(**options)
    outcome = _run(lambda: client.pull(settings, file_id, output), "pulled", options["quiet"])
    click.echo(str(outcome.path))


@click.command("transfer-server")
@click.option("--host", help="Interface to listen on. [default: TRANSFER_SERVER_HOST]")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port (0: any free one). [default: TRANSFER_SERVER_PORT]",
)
@with_appcontext
def transfer_server(host: str | None, port: int | None) -> None:
    """Run the TCP fast path for transfer push/pull (Ctrl-C or SIGTERM stops it).

    TLS when TRANSFER_TLS_CERT and TRANSFER_TLS_KEY are set; see
    apps/transfer/PROTOCOL.md. Logs one line per transfer on stderr.
    """
    _log_to_stderr()
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        server = tcp.make_server(app, host, port)
    except (OSError, ssl.SSLError) as exc:
        raise click.ClickException(f"cannot start the transfer server: {exc}") from None
    config = app.config
    click.echo(
        f"transfer server listening on {server.host}:{server.port}"
        f" ({'TLS' if server.tls else 'plain TCP, no TLS'}; at most"
        f" {config['TRANSFER_SERVER_MAX_CLIENTS']} clients, {config['TRANSFER_SERVER_TIMEOUT']:g} s"
        " timeout)",
        err=True,
    )
    if app.extensions.get("redis") is None:
        # The in-process broker reaches only this process's sockets, and no page is served here.
        click.echo(
            "no REDIS_URL: pushes to this server are not shown live on pages (ws /ws/me);"
            " live events between processes need Redis",
            err=True,
        )
    tcp.serve(server)
    click.echo("transfer server stopped", err=True)


def _log_to_stderr() -> None:
    """Send the server's log lines (one per transfer) to stderr unless logging is set up."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(message)s",
        )


def init_cli(app: Flask) -> None:
    app.cli.add_command(transfer)
    app.cli.add_command(transfer_server)
