"""Transfer commands: ``transfer cleanup``, ``transfer push``, ``transfer pull`` and
``transfer-server`` (the TCP fast path, :mod:`apps.transfer.tcp`).

``push`` and ``pull`` are thin: :mod:`apps.transfer.client` does the work and
raises :class:`~apps.transfer.client.ClientError` with the exit code a script
sees; here options become :class:`~apps.transfer.client.Options` and results
become one summary line.
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

EXIT_CODES = """\b
Exit codes:
  0  done (and verified)
  1  any other error (server error, local I/O error)
  2  usage: bad arguments, missing or malformed key or file id
  3  the server does not accept the key
  4  no such file (or not yours)
  5  checksum mismatch: nothing was kept
  6  could not connect, or the connection kept failing (retries used up)
  7  refused: over quota, file too large, or the server's disk is full
"""

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
        click.option(
            "--server",
            metavar="HOST:PORT",
            help="The TCP fast path. [default: TRANSFER_SERVER_HOST:TRANSFER_SERVER_PORT]",
        ),
        click.option(
            "--http",
            "http_url",
            metavar="BASE_URL",
            help="Go through the web server instead (tus uploads, Range downloads),"
            " e.g. https://files.example.com.",
        ),
        click.option(
            "--key",
            envvar="TRANSFER_API_KEY",
            show_envvar=True,
            help="API key (manage.py apikey create); prefer the environment variable,"
            " which other users cannot see in the process list.",
        ),
        click.option("--tls", is_flag=True, help="Speak TLS to the TCP server."),
        click.option(
            "--cafile",
            type=click.Path(exists=True, dir_okay=False),
            help="Trust the certificate(s) in this PEM file (implies --tls).",
        ),
        click.option(
            "--retries",
            default=5,
            show_default=True,
            type=click.IntRange(0, 1000),
            help="Attempts after a dropped connection (counted again whenever bytes move).",
        ),
        click.option(
            "--timeout",
            default=60.0,
            show_default=True,
            type=click.FloatRange(min=0.1),
            help="Seconds without progress before a connection counts as dropped.",
        ),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _options(
    server: str | None,
    http_url: str | None,
    key: str | None,
    tls: bool,
    cafile: str | None,
    retries: int,
    timeout: float,
    quiet: bool,
) -> client.Options:
    if not key:
        raise click.UsageError("no API key: pass --key or set TRANSFER_API_KEY")
    if server and http_url:
        raise click.UsageError("--server and --http are two different ways in: pick one")
    try:
        client.parse_key(key)
        address = client.parse_server(server) if server else _default_server()
    except client.ClientError as exc:
        raise click.UsageError(str(exc)) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--server") from None
    return client.Options(
        key=key,
        server=address,
        http=http_url,
        tls=tls or bool(cafile),
        cafile=cafile,
        timeout=timeout,
        retries=retries,
        progress=not quiet,
    )


#: Hosts a server listens on that a client cannot connect to as such.
_LISTEN_ANYWHERE = {"0.0.0.0", "::", ""}  # noqa: S104 (compared against, never bound)


def _default_server() -> tuple[str, int]:
    """The server's own settings: what a client on the same host connects to."""
    config = current_app.config
    host = config["TRANSFER_SERVER_HOST"]
    return ("127.0.0.1" if host in _LISTEN_ANYWHERE else host), config["TRANSFER_SERVER_PORT"]


def _run(action: Callable[[], client.Outcome], verb: str, quiet: bool) -> client.Outcome:
    """Run a push or pull; a :class:`client.ClientError` becomes its message and exit code."""
    try:
        outcome = action()
    except client.ClientError as exc:
        click.secho(f"Error: {exc}", err=True, fg="red")
        sys.exit(int(exc.code))
    if not quiet:
        click.echo(_summary(verb, outcome), err=True)
    return outcome


def _summary(verb: str, outcome: client.Outcome) -> str:
    seconds = max(outcome.seconds, 1e-6)
    resumed = f", resumed at byte {outcome.resumed_from}" if outcome.resumed_from else ""
    return (
        f"{verb} {outcome.name} ({client.human_size(outcome.size)}) in {outcome.seconds:.1f} s:"
        f" {client.human_size(outcome.moved)} moved at {outcome.moved / seconds / 1e6:.1f} MB/s"
        f" average{resumed}; sha256 {outcome.sha256} verified"
    )


@transfer.command("push", epilog=EXIT_CODES)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_client_options
@with_appcontext
def push(file: Path, **options: Any) -> None:
    """Upload FILE; print its file id on stdout.

    The file's SHA-256 is declared first and the server keeps the file only
    if the bytes match it. An interrupted push resumes (now or on the next
    run) from the last byte the server has.
    """
    settings = _options(**options)
    outcome = _run(lambda: client.push(settings, file), "pushed", options["quiet"])
    click.echo(outcome.file_id)


@transfer.command("pull", epilog=EXIT_CODES)
@click.argument("file_id", metavar="ID")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Where to write (a file, or a directory for the server's name). [default: the"
    " file's name, here]",
)
@_client_options
@with_appcontext
def pull(file_id: str, output: Path | None, **options: Any) -> None:
    """Download file ID; print the path written on stdout.

    Bytes go to PATH.part, which a later pull resumes; PATH appears, replaced
    in one step, only once the whole file's SHA-256 is verified.
    """
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
