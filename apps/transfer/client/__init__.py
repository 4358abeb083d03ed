"""The transfer client (``flaskmono-transfer``): the TCP fast path, or HTTP with ``--http``.

Both ways give the same guarantees, which is what a script relies on:

* **Resume.** A dropped connection is retried with backoff, from where the
  server says it stands (PUSH: the offset it answers; tus: HEAD), and a
  PULL continues ``<PATH>.part``. A later run resumes too: over TCP the
  server finds the unfinished upload of the same bytes; over HTTP the
  upload's URL is remembered in ``~/.cache/flaskmono/tus-uploads.json``.
* **Verification.** A PUSH declares the whole file's SHA-256, and the
  server keeps the file only if the bytes match it. A PULL hashes the whole
  result, any prefix already on disk included, and renames ``<PATH>.part``
  to PATH only when it matches: PATH is never a half or wrong file.
* **No silent merge.** A file that changes between attempts (size, mtime,
  ctime or inode) is checksummed again and sent as a new upload, and so is
  one that changed while it was being sent (the server's check fails, the
  file's stat tells why). Bytes garbled on the way fail that check too.
* **Exit codes** (:class:`ExitCode`) say what went wrong.

No Flask, no server code, no app context: the client imports only the stdlib,
tqdm and the package's stdlib-only modules (``wire``, ``exceptions``,
``tusmeta``, ``blocks``, ``names``), so it runs on a laptop with no server
settings, as ``flaskmono-transfer`` (:mod:`.cli`) or as ``manage.py transfer
push|pull``. The modules show the seam between the two ways in: ``transport``
(the :class:`Transport` protocol and the options), ``tcp`` and ``http`` (the
two transports), ``files`` (the local file, the ``.part`` file and the resume
cache), ``progress`` and ``errors``.

Exceptions (:mod:`.errors`): :class:`ClientError` ends the command with its
exit code; :class:`Retry` (internal) is a failure worth another attempt.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from apps.transfer.client.errors import (
    EXIT_CODES,
    EXIT_HELP,
    ClientError,
    ExitCode,
    Retry,
    TrailerRefused,
    reason,
)
from apps.transfer.client.files import LocalFile, PartFile
from apps.transfer.client.http import HttpTransport
from apps.transfer.client.progress import Outcome, Progress, human_size, note, progress_bar, summary
from apps.transfer.client.tcp import TcpTransport
from apps.transfer.client.transport import Options, Remote, Transport, parse_key, parse_server
from apps.transfer.names import clean_filename
from apps.transfer.wire import FILE_ID

__all__ = [
    "EXIT_CODES",
    "EXIT_HELP",
    "ClientError",
    "ExitCode",
    "HttpTransport",
    "Options",
    "Outcome",
    "TcpTransport",
    "human_size",
    "parse_key",
    "parse_server",
    "pull",
    "push",
    "summary",
]

T = TypeVar("T")

BACKOFF_FIRST = 0.5  # seconds before the first retry; doubles up to BACKOFF_MAX
BACKOFF_MAX = 15.0


# -- the two commands --------------------------------------------------------------------------


def push(options: Options, path: Path) -> Outcome:
    """Upload *path*; returns once the server has verified and kept it.

    Raises:
        ClientError: with the exit code that says why.
    """
    transport = _transport(options)

    def measure() -> LocalFile:
        if transport.hashes_while_sending:
            return LocalFile.look(path)
        return LocalFile.measure(path, options.progress)

    local = _retrying(measure, options, Progress(None), "checksumming")
    started = time.monotonic()
    with progress_bar(local.size, local.name, options.progress) as bar:
        progress = Progress(bar)

        def attempt() -> tuple[str, str]:
            nonlocal local
            if local.changed():
                note(f"{path} changed since it was first looked at: starting over with it")
                bar.clear()
                was_hashed = local.sha256 is not None
                local = LocalFile.measure(path, options.progress) if was_hashed else measure()
                bar.total = local.size
            try:
                return transport.push(local, progress)
            except TrailerRefused as refusal:
                note(f"the server wants the SHA-256 first ({refusal}): checksumming")
                bar.clear()
                local = LocalFile.measure(path, options.progress)
                return transport.push(local, progress)

        file_id, sha256 = _retrying(attempt, options, progress, f"pushing {path}")
    if local.sha256 is not None and sha256 != local.sha256:
        raise ClientError(
            f"the server kept a file whose SHA-256 is {sha256}, not {local.sha256}",
            ExitCode.CHECKSUM,
        )
    return Outcome(
        file_id,
        path,
        local.name,
        local.size,
        sha256,
        progress.moved,
        time.monotonic() - started,
        progress.first_offset or 0,
    )


def pull(options: Options, file_id: str, output: Path | None) -> Outcome:
    """Download a file to *output* (a path or a directory; default: its name, here).

    Raises:
        ClientError: with the exit code that says why.
    """
    if not FILE_ID.match(file_id):
        raise ClientError(f"{file_id!r} is not a file id (32 hex digits)", ExitCode.USAGE)
    transport = _transport(options)
    silent = Progress(None)
    remote = _retrying(lambda: transport.stat(file_id), options, silent, "looking up the file")
    destination = _destination(output, remote.name)
    started = time.monotonic()
    try:
        part = PartFile(destination, remote.size)
    except OSError as exc:
        raise ClientError(f"cannot write {destination}.part: {reason(exc)}") from exc
    with part, progress_bar(remote.size, remote.name, options.progress) as bar:
        progress = Progress(bar)
        first = part.position

        def fetch() -> None:
            attempt = functools.partial(_pull_once, transport, remote, part, progress)
            _retrying(attempt, options, progress, f"pulling {file_id}")

        fetch()
        if first and part.digest() != remote.sha256:
            note(f"{part.path} did not belong to this file: downloading it again from the start")
            part.restart()
            first = 0
            fetch()
        part.commit(remote.sha256)
    return Outcome(
        remote.file_id,
        destination,
        remote.name,
        remote.size,
        remote.sha256,
        progress.moved,
        time.monotonic() - started,
        first,
    )


def _pull_once(transport: Transport, remote: Remote, part: PartFile, progress: Progress) -> None:
    progress.start(part.position)
    if part.position < remote.size:
        transport.pull(remote, part, progress)


def _destination(output: Path | None, name: str) -> Path:
    """Where a pull writes: *output*, or the server's name for the file in it or here.

    The server's name went through :func:`clean_filename` there and goes
    through it again here: a name never carries a directory part.
    """
    name = clean_filename(name)
    if output is None:
        return Path.cwd() / name
    return output / name if output.is_dir() else output


def _retrying(attempt: Callable[[], T], options: Options, progress: Progress, what: str) -> T:
    """Run *attempt* until it succeeds, with up to ``options.retries`` retries.

    An attempt that moved bytes before it failed starts the count again: a long
    transfer over a flaky link may drop many times, as long as it gets on.
    """
    left, delay = options.retries, BACKOFF_FIRST
    while True:
        before = progress.moved
        try:
            return attempt()
        except Retry as exc:
            if progress.moved > before:
                left, delay = options.retries, BACKOFF_FIRST
            if left <= 0:
                tries = options.retries + 1
                raise ClientError(
                    f"{what} failed after {tries} attempt(s): {exc}", ExitCode.CONNECTION
                ) from exc
            note(f"{exc}; retrying in {delay:g} s ({left} attempt(s) left)")
            time.sleep(delay)
            left, delay = left - 1, min(delay * 2, BACKOFF_MAX)


def _transport(options: Options) -> Transport:
    if options.http:
        return HttpTransport(options)
    return TcpTransport(options)
