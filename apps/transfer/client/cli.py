"""``flaskmono-transfer push|pull``: the client's own command line (argparse, no Flask).

``manage.py transfer push|pull`` (:mod:`apps.transfer.cli`, click) offers the
same commands with the same options and exit codes; both take the options'
help from :data:`HELP` and the exit codes from :mod:`.errors`, and differ only
where the default server comes from (there the app's settings, here the same
variables read from the environment).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from apps.transfer.client import pull, push
from apps.transfer.client.errors import EXIT_CODES, ClientError, ExitCode
from apps.transfer.client.progress import Outcome, summary
from apps.transfer.client.transport import Options, parse_key, parse_server

DEFAULTS = Options(key="")

#: The help of each option (and command), shared with ``manage.py transfer push|pull``.
HELP = {
    "server": "The TCP fast path. [default: TRANSFER_SERVER_HOST:TRANSFER_SERVER_PORT]",
    "http": "Go through the web server instead (tus uploads, Range downloads),"
    " e.g. https://files.example.com.",
    "key": "API key (manage.py apikey create); prefer the environment variable,"
    " which other users cannot see in the process list.",
    "tls": "Speak TLS to the TCP server.",
    "cafile": "Trust the certificate(s) in this PEM file (implies --tls).",
    "retries": "Attempts after a dropped connection (counted again whenever bytes move).",
    "timeout": "Seconds without progress before a connection counts as dropped.",
    "quiet": "No progress bar and no summary.",
    "output": "Where to write (a file, or a directory for the server's name). [default: the"
    " file's name, here]",
    "push": "Upload FILE; print its file id on stdout.\n\n"
    "The file's SHA-256 is declared first and the server keeps the file only\n"
    "if the bytes match it. An interrupted push resumes (now or on the next\n"
    "run) from the last byte the server has.",
    "pull": "Download file ID; print the path written on stdout.\n\n"
    "Bytes go to PATH.part, which a later pull resumes; PATH appears, replaced\n"
    "in one step, only once the whole file's SHA-256 is verified.",
}

NO_KEY = "no API key: pass --key or set TRANSFER_API_KEY"
TWO_WAYS = "--server and --http are two different ways in: pick one"

#: Hosts a server listens on that a client cannot connect to as such.
_LISTEN_ANYWHERE = {"0.0.0.0", "::", ""}  # noqa: S104 (compared against, never bound)


def default_server(host: str, port: int) -> tuple[str, int]:
    """Where a client on the server's host connects, given the server's own settings."""
    return ("127.0.0.1" if host in _LISTEN_ANYWHERE else host), port


def make_options(
    *,
    server: tuple[str, int] | str | None,
    http: str | None,
    key: str | None,
    tls: bool,
    cafile: str | None,
    retries: int,
    timeout: float,
    quiet: bool,
) -> Options:
    """Options from the command line; ValueError(message) for a usage error.

    *server* is the ``--server`` text, or the default address when it was not given.
    """
    if not key:
        raise ValueError(NO_KEY)
    if isinstance(server, str) and http:
        raise ValueError(TWO_WAYS)
    try:
        parse_key(key)
    except ClientError as exc:
        raise ValueError(str(exc)) from None
    address = parse_server(server) if isinstance(server, str) else server
    return Options(
        key=key,
        server=address or DEFAULTS.server,
        http=http,
        tls=tls or bool(cafile),
        cafile=cafile,
        timeout=timeout,
        retries=retries,
        progress=not quiet,
    )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def run(
    action: Callable[[], Outcome], verb: str, quiet: bool, error: Callable[[str], None] = _stderr
) -> Outcome:
    """Run a push or pull; a :class:`ClientError` becomes a message (to *error*) and exit code."""
    try:
        outcome = action()
    except ClientError as exc:
        error(f"Error: {exc}")
        sys.exit(int(exc.code))
    if not quiet:
        print(summary(verb, outcome), file=sys.stderr)
    return outcome


# -- argparse ----------------------------------------------------------------------------------


def _retries(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is not in the range 0<=x<=1000")
    return number


def _timeout(value: str) -> float:
    number = float(value)
    if number < 0.1:
        raise argparse.ArgumentTypeError(f"{value} is not in the range x>=0.1")
    return number


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", metavar="HOST:PORT", help=HELP["server"])
    parser.add_argument("--http", metavar="BASE_URL", help=HELP["http"])
    parser.add_argument("--key", help=HELP["key"] + " [env var: TRANSFER_API_KEY]")
    parser.add_argument("--tls", action="store_true", help=HELP["tls"])
    parser.add_argument("--cafile", help=HELP["cafile"])
    parser.add_argument(
        "--retries",
        type=_retries,
        default=DEFAULTS.retries,
        help=HELP["retries"] + f" [default: {DEFAULTS.retries}]",
    )
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULTS.timeout,
        help=HELP["timeout"] + f" [default: {DEFAULTS.timeout}]",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help=HELP["quiet"])


def parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The command line, and each command's own parser (for its usage errors)."""
    top = argparse.ArgumentParser(
        prog="flaskmono-transfer",
        description="Move large files to and from a flaskmono server (TCP fast path or HTTP).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="{push,pull}")
    each = {}
    for name in ("push", "pull"):
        command = commands.add_parser(
            name,
            help=HELP[name].split("\n", 1)[0],
            description=HELP[name],
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "push":
            command.add_argument("file", metavar="FILE", type=Path)
        else:
            command.add_argument("file_id", metavar="ID")
            command.add_argument("-o", "--output", type=Path, help=HELP["output"])
        _add_options(command)
        each[name] = command
    return top, each


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; returns the exit code (see :class:`ExitCode`)."""
    top, commands = parsers()
    args = top.parse_args(argv)
    usage = commands[args.command]
    if args.command == "push" and not args.file.is_file():
        usage.error(f"FILE: {str(args.file)!r} is not an existing file")
    if args.cafile and not os.path.isfile(args.cafile):
        usage.error(f"--cafile: {args.cafile!r} is not an existing file")
    env = os.environ
    try:
        options = make_options(
            server=args.server
            or default_server(
                env.get("TRANSFER_SERVER_HOST", DEFAULTS.server[0]),
                int(env.get("TRANSFER_SERVER_PORT", DEFAULTS.server[1])),  # ValueError: usage
            ),
            http=args.http,
            key=args.key or env.get("TRANSFER_API_KEY"),
            tls=args.tls,
            cafile=args.cafile,
            retries=args.retries,
            timeout=args.timeout,
            quiet=args.quiet,
        )
    except ValueError as exc:
        usage.error(str(exc))
    if args.command == "push":
        outcome = run(lambda: push(options, args.file), "pushed", args.quiet)
        print(outcome.file_id)
    else:
        outcome = run(lambda: pull(options, args.file_id, args.output), "pulled", args.quiet)
        print(outcome.path)
    return int(ExitCode.OK)
