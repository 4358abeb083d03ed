"""The client behind ``manage.py transfer push|pull``: the TCP fast path, or HTTP with ``--http``.

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

Exceptions: :class:`ClientError` ends the command with its exit code;
:class:`Retry` (internal) is a failure worth another attempt.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar
from urllib.parse import quote, unquote, urlsplit

from tqdm import tqdm

from apps.transfer import wire
from apps.transfer.blocks import BLOCK_SIZE, HashingThread, fill, fsync_dir
from apps.transfer.exceptions import PeerClosed, ProtocolError
from apps.transfer.names import clean_filename

T = TypeVar("T")

SEND_SLICE = 4 << 20  # bytes per sendfile() call: the progress bar moves this often
TUS_CHUNK = 8 << 20  # bytes per tus PATCH, each with its own Upload-Checksum
TUS_VERSION = "1.0.0"
GREETING_TIMEOUT = 10.0  # seconds to wait for the server's challenge
BACKOFF_FIRST = 0.5  # seconds before the first retry; doubles up to BACKOFF_MAX
BACKOFF_MAX = 15.0


class ExitCode(IntEnum):
    """What ``transfer push|pull`` exits with (documented in the commands' help)."""

    OK = 0
    ERROR = 1  # anything else: a server error, a protocol violation, a local I/O error
    USAGE = 2  # bad arguments, no or malformed key, a malformed file id
    AUTH = 3  # the server does not accept the key
    NOT_FOUND = 4  # no such file (or not yours)
    CHECKSUM = 5  # the bytes do not match their SHA-256; nothing was kept
    CONNECTION = 6  # could not connect, or the connection kept failing (retries exhausted)
    REFUSED = 7  # over quota, file too large, or the server's disk is full


class ClientError(Exception):
    """Ends the command: the message for stderr and the exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.ERROR, server_code: str = ""):
        super().__init__(message)
        self.code, self.server_code = code, server_code


class Retry(Exception):
    """A dropped connection, a busy server, a file that changed: try again (with backoff)."""


#: Server error codes (wire.ERRORS) as exit codes; those not listed are worth a retry.
_EXIT_FOR = {
    "auth_failed": ExitCode.AUTH,
    "not_found": ExitCode.NOT_FOUND,
    "checksum_mismatch": ExitCode.CHECKSUM,
    "quota": ExitCode.REFUSED,
    "too_large": ExitCode.REFUSED,
    "disk_full": ExitCode.REFUSED,
    "bad_request": ExitCode.ERROR,
    "internal": ExitCode.ERROR,
}


@dataclass(frozen=True)
class Options:
    """How to reach the server; built by the CLI from its options and settings."""

    key: str
    server: tuple[str, int] = ("127.0.0.1", 9000)
    http: str | None = None  # a base URL: go through tus and Range instead of TCP
    tls: bool = False
    cafile: str | None = None
    timeout: float = 60.0
    retries: int = 5
    progress: bool = True


@dataclass(frozen=True)
class Outcome:
    """What a push or pull did, for the summary line and for scripts."""

    file_id: str
    path: Path
    name: str
    size: int
    sha256: str
    moved: int  # bytes that crossed the network in this run
    seconds: float
    resumed_from: int  # where this run started (0: from the beginning)


@dataclass(frozen=True)
class Remote:
    """A finished file on the server, as a pull sees it."""

    file_id: str
    name: str
    size: int
    sha256: str


def parse_key(key: str) -> tuple[str, bytes]:
    """The key id and secret of ``fmk_<id>_<secret>`` (a usage error otherwise)."""
    match = wire.KEY_PATTERN.match(key.strip())
    if match is None:
        raise ClientError(
            "the API key is malformed: expected fmk_<16 hex>_<43 chars>", ExitCode.USAGE
        )
    return match["key_id"], match["secret"].encode("ascii")


def parse_server(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``; ValueError with a message otherwise."""
    match = re.match(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})$", value)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return match["v6"] or match["host"], int(match["port"])


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def note(message: str) -> None:
    """A line on stderr that does not tear an active progress bar."""
    tqdm.write(message, file=sys.stderr)


# -- the two commands --------------------------------------------------------------------------


def push(options: Options, path: Path) -> Outcome:
    """Upload *path*; returns once the server has verified and kept it.

    Raises:
        ClientError: with the exit code that says why.
    """
    transport = _transport(options)
    local = _retrying(
        lambda: LocalFile.measure(path, options.progress), options, _Progress(None), "checksumming"
    )
    started = time.monotonic()
    with _progress(local.size, local.name, options) as bar:
        progress = _Progress(bar)

        def attempt() -> tuple[str, str]:
            nonlocal local
            if local.changed():
                note(f"{path} changed since it was checksummed: checksumming it again")
                bar.clear()
                local = LocalFile.measure(path, options.progress)
                bar.total = local.size
            return transport.push(local, progress)

        file_id, sha256 = _retrying(attempt, options, progress, f"pushing {path}")
    if sha256 != local.sha256:
        raise ClientError(
            f"the server kept a file whose SHA-256 is {sha256}, not {local.sha256}",
            ExitCode.CHECKSUM,
        )
    return Outcome(
        file_id,
        path,
        local.name,
        local.size,
        local.sha256,
        progress.moved,
        time.monotonic() - started,
        progress.first_offset or 0,
    )


def pull(options: Options, file_id: str, output: Path | None) -> Outcome:
    """Download a file to *output* (a path or a directory; default: its name, here).

    Raises:
        ClientError: with the exit code that says why.
    """
    if not wire.FILE_ID.match(file_id):
        raise ClientError(f"{file_id!r} is not a file id (32 hex digits)", ExitCode.USAGE)
    transport = _transport(options)
    silent = _Progress(None)
    remote = _retrying(lambda: transport.stat(file_id), options, silent, "looking up the file")
    destination = _destination(output, remote.name)
    started = time.monotonic()
    try:
        part = _PartFile(destination, remote.size)
    except OSError as exc:
        raise ClientError(f"cannot write {destination}.part: {_reason(exc)}") from exc
    with part, _progress(remote.size, remote.name, options) as bar:
        progress = _Progress(bar)
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


def _pull_once(transport: Transport, remote: Remote, part: _PartFile, progress: _Progress) -> None:
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


# -- retrying and progress ---------------------------------------------------------------------


class _Progress:
    """Where a transfer stands: the bar, the bytes moved in this run, the first offset."""

    def __init__(self, bar: tqdm | None) -> None:
        self.bar = bar
        self.moved = 0
        self.position = 0
        self.first_offset: int | None = None

    def start(self, offset: int) -> None:
        """An attempt begins at *offset* (the server's word for a push, the .part for a pull)."""
        if self.first_offset is None:
            self.first_offset = offset
        if offset:
            note(f"resuming at byte {offset} of {self.bar.total if self.bar else '?'}")
        self.position = offset
        if self.bar is not None and self.bar.n != offset:
            self.bar.n = offset
            self.bar.refresh()

    def advance(self, count: int) -> None:
        self.moved += count
        self.position += count
        if self.bar is not None:
            self.bar.update(count)


@contextlib.contextmanager
def _progress(total: int, name: str, options: Options) -> Iterator[tqdm]:
    short = name if len(name) <= 24 else name[:21] + "..."
    with tqdm(
        total=total,
        desc=short,
        unit="B",
        unit_scale=True,
        unit_divisor=1000,
        file=sys.stderr,
        disable=not options.progress,
        mininterval=0.25,
        dynamic_ncols=True,
    ) as bar:
        yield bar


def _retrying(attempt: Callable[[], T], options: Options, progress: _Progress, what: str) -> T:
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


# -- local files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalFile:
    """A file to push, with what identifies this version of it."""

    path: Path
    name: str
    size: int
    sha256: str
    identity: tuple[int, ...]  # size, mtime, ctime, inode, device

    @classmethod
    def measure(cls, path: Path, show_progress: bool) -> LocalFile:
        """Checksum the file, stat taken before and after so a change meanwhile is noticed."""
        with open(path, "rb") as f:
            before = _identity(os.fstat(f.fileno()))
            digest = _hash_stream(f, before[0], f"checksum {path.name}"[:30], show_progress)
            if _identity(os.stat(path)) != before:
                raise Retry(f"{path} changed while it was being checksummed")
        return cls(path, clean_filename(path.name), before[0], digest, before)

    def changed(self) -> bool:
        try:
            return _identity(os.stat(self.path)) != self.identity
        except FileNotFoundError:
            raise ClientError(f"{self.path} was deleted", ExitCode.ERROR) from None


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when the file does; ctime too, which (unlike mtime) cannot be set back."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def _hash_stream(f: BinaryIO, size: int, label: str, show_progress: bool) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK_SIZE)
    view = memoryview(buffer)
    with tqdm(
        total=size,
        desc=label,
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        disable=not show_progress or size < 64 * BLOCK_SIZE,
        leave=False,
    ) as bar:
        while n := f.readinto(view):  # type: ignore[attr-defined]
            digest.update(view[:n])
            bar.update(n)
    return digest.hexdigest()


class _PartFile:
    """``<PATH>.part``: a pull's bytes so far, hashed as they arrive, renamed when verified.

    The hash always covers exactly the bytes in the file: a prefix left by an
    earlier run is hashed first, and each block is written before it is hashed.
    """

    def __init__(self, destination: Path, size: int) -> None:
        self.destination = destination
        self.path = destination.with_name(destination.name + ".part")
        self.size = size
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.file = os.fdopen(fd, "r+b")
        try:
            self.position = os.fstat(fd).st_size
            if self.position > size:  # not a prefix of this file, whatever it is
                self.position = 0
            os.ftruncate(fd, self.position)
            self.hash = HashingThread(self._prefix_hash())
        except BaseException:
            self.file.close()
            raise

    def __enter__(self) -> _PartFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self.position == 0:  # nothing worth resuming from
            self.path.unlink(missing_ok=True)

    def _prefix_hash(self) -> Any:
        hasher = hashlib.sha256()
        self.file.seek(0)
        left = self.position
        while left:
            block = self.file.read(min(BLOCK_SIZE, left))
            if not block:
                raise ClientError(f"{self.path} shrank while it was being read")
            hasher.update(block)
            left -= len(block)
        return hasher

    def receive(self, read_into: Callable[[memoryview], int], progress: _Progress) -> None:
        """Append bytes from *read_into* until the file is whole (Retry if the stream ends)."""
        while self.position < self.size:
            buffer = self.hash.free.get()
            view = memoryview(buffer)[: min(BLOCK_SIZE, self.size - self.position)]
            filled, failure = fill(read_into, view)
            if filled:
                self._write(view[:filled])
                self.hash.submit(buffer, filled)
                progress.advance(filled)
            else:
                self.hash.free.put(buffer)
            if failure is not None:
                raise Retry(f"connection lost at byte {self.position}: {failure}") from failure
            if filled < len(view):
                raise Retry(f"the server closed the connection at byte {self.position}")

    def _write(self, view: memoryview) -> None:
        try:
            while view:
                written = os.pwrite(self.file.fileno(), view, self.position)
                view, self.position = view[written:], self.position + written
        except OSError as exc:  # a full or failing local disk: no retry will help
            raise ClientError(f"cannot write {self.path}: {_reason(exc)}") from exc

    def digest(self) -> str:
        """The SHA-256 of every byte in the file (waits for the hashing thread)."""
        hasher = self.hash.finish()
        digest = hasher.hexdigest()
        self.hash = HashingThread(hasher)  # the file may still grow after a restart
        return str(digest)

    def restart(self) -> None:
        """Forget every byte (a stale prefix): truncate and hash from nothing."""
        self.hash.finish()
        os.ftruncate(self.file.fileno(), 0)
        self.position = 0
        self.hash = HashingThread(hashlib.sha256())

    def commit(self, sha256: str) -> None:
        """Rename into place if the bytes are the file; otherwise delete them.

        Raises:
            ClientError: (CHECKSUM) the bytes do not match.
        """
        digest = self.digest()
        if self.position != self.size or digest != sha256:
            self.close()
            self.path.unlink(missing_ok=True)
            raise ClientError(
                f"the downloaded bytes have SHA-256 {digest}, not the server's {sha256};"
                " nothing was kept",
                ExitCode.CHECKSUM,
            )
        os.fsync(self.file.fileno())
        self.close()
        os.replace(self.path, self.destination)
        fsync_dir(self.destination.parent)

    def close(self) -> None:
        self.hash.finish()
        self.file.close()


# -- transports --------------------------------------------------------------------------------


class Transport(Protocol):
    def push(self, local: LocalFile, progress: _Progress) -> tuple[str, str]:
        """Send the file (resuming where the server stands); returns (file id, its SHA-256)."""

    def stat(self, file_id: str) -> Remote: ...

    def pull(self, remote: Remote, part: _PartFile, progress: _Progress) -> None:
        """Fill *part* from its current position to the end."""


def _transport(options: Options) -> Transport:
    if options.http:
        return HttpTransport(options)
    return TcpTransport(options)


def _client_tls(options: Options) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class TcpTransport:
    """The fast path: see ``apps/transfer/PROTOCOL.md``."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.key_id, self.secret = parse_key(options.key)
        self.tls = _client_tls(options) if options.tls or options.cafile else None

    @contextlib.contextmanager
    def _session(self) -> Iterator[socket.socket]:
        """A connected, authenticated socket; network failures become :class:`Retry`."""
        sock = self._connect()
        try:
            self._authenticate(sock)
            yield sock
        except PeerClosed as exc:
            raise Retry(f"the server closed the connection ({exc})") from exc
        except ProtocolError as exc:
            raise ClientError(f"the server broke the protocol: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise Retry(f"connection lost: {_reason(exc)}") from exc
        finally:
            sock.close()

    def _connect(self) -> socket.socket:
        host, port = self.options.server
        try:
            sock = socket.create_connection((host, port), timeout=self.options.timeout)
        except OSError as exc:
            raise Retry(f"cannot connect to {host}:{port}: {_reason(exc)}") from exc
        if self.tls is None:
            return sock
        try:
            return self.tls.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise ClientError(
                f"TLS: the server's certificate is not trusted ({exc.verify_message});"
                " pass --cafile with the certificate that signed it",
                ExitCode.CONNECTION,
            ) from exc
        except OSError as exc:
            sock.close()
            raise Retry(f"TLS handshake with {host}:{port} failed: {_reason(exc)}") from exc

    def _authenticate(self, sock: socket.socket) -> None:
        # A TLS server waits for the client to speak first, so a plain client would
        # wait for the challenge until the server gives up on it: ask sooner.
        sock.settimeout(min(self.options.timeout, GREETING_TIMEOUT))
        try:
            challenge = _checked(wire.read_message(sock))
        except TimeoutError:
            hint = "" if self.tls else " (if it speaks TLS, pass --tls or --cafile)"
            raise Retry(
                f"the server did not greet us within {sock.gettimeout():g} s{hint}"
            ) from None
        sock.settimeout(self.options.timeout)
        if challenge.get("type") != "challenge" or challenge.get("version") != wire.VERSION:
            raise ClientError(
                f"the server speaks protocol version {challenge.get('version')!r},"
                f" not {wire.VERSION} (or is not a transfer server)"
            )
        try:
            nonce = wire.decode_nonce(challenge.get("nonce"))
        except ValueError as exc:
            raise ClientError(f"the server's challenge is malformed: {exc}") from None
        mac = wire.auth_mac(self.secret, nonce, self.key_id)
        _request(sock, {"type": "auth", "key_id": self.key_id, "mac": mac})

    def push(self, local: LocalFile, progress: _Progress) -> tuple[str, str]:
        with self._session() as sock:
            reply = _request(
                sock, {"op": "push", "name": local.name, "size": local.size, "sha256": local.sha256}
            )
            offset = int(reply["offset"])
            progress.start(offset)
            with open(local.path, "rb") as f:
                try:
                    _send_file(sock, f, offset, local.size, progress)
                except OSError as exc:
                    _explain_broken_send(sock)
                    raise Retry(
                        f"connection lost at byte {progress.position}: {_reason(exc)}"
                    ) from exc
            try:
                done = _request(sock, {})
            except ClientError as exc:
                if exc.server_code == "checksum_mismatch" and local.changed():
                    raise Retry(f"{local.path} changed while it was being sent") from exc
                raise
        return str(done["file_id"]), str(done["sha256"])

    def stat(self, file_id: str) -> Remote:
        with self._session() as sock:
            return _remote(_request(sock, {"op": "stat", "file_id": file_id}))

    def pull(self, remote: Remote, part: _PartFile, progress: _Progress) -> None:
        with self._session() as sock:
            reply = _remote(
                _request(sock, {"op": "pull", "file_id": remote.file_id, "offset": part.position})
            )
            if reply != remote:
                raise ClientError(f"the file changed on the server: {reply} is not {remote}")
            part.receive(sock.recv_into, progress)


def _remote(reply: Mapping[str, Any]) -> Remote:
    return Remote(
        str(reply["file_id"]), str(reply["name"]), int(reply["size"]), str(reply["sha256"])
    )


def _request(sock: socket.socket, message: Mapping[str, Any]) -> dict[str, Any]:
    """Send *message* (none if empty) and read the reply, which must be ``ok``."""
    if message:
        wire.send_message(sock, message)
    return _checked(wire.read_message(sock))


def _checked(reply: dict[str, Any]) -> dict[str, Any]:
    """The reply if it is not an error; else Retry (busy, timeout...) or ClientError."""
    if reply.get("ok") is False:
        code = str(reply.get("error"))
        message = str(reply.get("message") or code)
        if code not in _EXIT_FOR:
            raise Retry(f"the server says: {message} ({code})")
        raise ClientError(f"the server refused: {message} ({code})", _EXIT_FOR[code], code)
    return reply


def _send_file(
    sock: socket.socket, f: BinaryIO, offset: int, size: int, progress: _Progress
) -> None:
    """The file from *offset* to *size*, in slices so the progress bar moves."""
    position = offset
    while position < size:
        count = min(SEND_SLICE, size - position)
        sent = wire.send_file(sock, f, position, count)
        progress.advance(sent)
        position += sent
        if sent < count:
            raise Retry(f"{f.name} got shorter while it was being sent")


def _explain_broken_send(sock: socket.socket) -> None:
    """After a failed send, read the error the server may have sent first (quota, disk full)."""
    with contextlib.suppress(OSError, ProtocolError):
        sock.settimeout(2.0)
        _checked(wire.read_message(sock))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# -- HTTP: tus for push, Range for pull --------------------------------------------------------


class HttpTransport:
    """The web server's own endpoints: ``/api/transfer/uploads`` (tus 1.0) and downloads."""

    def __init__(self, options: Options) -> None:
        assert options.http is not None
        parts = urlsplit(options.http)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ClientError(
                f"--http needs an http:// or https:// URL, not {options.http!r}", ExitCode.USAGE
            )
        parse_key(options.key)
        self.options = options
        self.base = options.http.rstrip("/")
        self.prefix = parts.path.rstrip("/")
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.cache = _ResumeCache()
        self._conn: http.client.HTTPConnection | None = None

    # -- plumbing --

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(
                    self.host,
                    self.port,
                    timeout=self.options.timeout,
                    context=_client_tls(self.options),
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.options.timeout
                )
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.options.key.strip()}", **extra}

    @contextlib.contextmanager
    def _exchange(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Iterator[http.client.HTTPResponse]:
        """One request and its response; network failures become :class:`Retry`."""
        conn = self._connection()
        try:
            conn.request(method, self.prefix + path, body=body, headers=dict(headers))
            response = conn.getresponse()
            yield response
            response.read()  # the rest, so the connection can take the next request
        except ssl.SSLCertVerificationError as exc:
            self._drop()
            raise ClientError(
                f"TLS: the server's certificate is not trusted ({exc.verify_message});"
                " pass --cafile with the certificate that signed it",
                ExitCode.CONNECTION,
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise Retry(f"connection to {self.host} lost: {_reason(exc)}") from exc
        except BaseException:
            self._drop()  # a response left half read cannot carry the next request
            raise

    def _fail(self, response: http.client.HTTPResponse, what: str) -> ClientError | Retry:
        """The error for an unexpected status (the caller raises it)."""
        try:
            message = json.loads(response.read() or b"{}").get("message", "")
        except ValueError:
            message = ""
        detail = f"{what}: HTTP {response.status} {response.reason}" + (
            f": {message}" if message else ""
        )
        status = response.status
        if status in {401, 403} or 300 <= status < 400:
            return ClientError(f"{detail} (is the key right?)", ExitCode.AUTH)
        if status == 404:
            return ClientError(detail, ExitCode.NOT_FOUND)
        if status in {413, 507}:
            return ClientError(detail, ExitCode.REFUSED)
        if status in {409, 410, 423, 429} or status >= 500:
            return Retry(detail)
        return ClientError(detail)

    # -- push --

    def push(self, local: LocalFile, progress: _Progress) -> tuple[str, str]:
        key = self.cache.key(self.base, self.options.key, local)
        url = self.cache.get(key)
        offset = self._offset(url) if url else None
        if url is None or offset is None:
            url, offset = self._create(local), 0
            self.cache.put(key, url)
        progress.start(offset)
        with open(local.path, "rb") as f:
            while offset < local.size:  # (an empty file is complete once created)
                offset = self._patch(url, f, offset, local, progress)
        self.cache.forget(key)
        file_id = url.rstrip("/").rsplit("/", 1)[-1]
        return file_id, self.stat(file_id).sha256

    def _create(self, local: LocalFile) -> str:
        metadata = ",".join(
            f"{k} {base64.b64encode(v.encode()).decode()}"
            for k, v in (("filename", local.name), ("sha256", local.sha256))
        )
        headers = self._headers(
            **{
                "Tus-Resumable": TUS_VERSION,
                "Upload-Length": str(local.size),
                "Upload-Metadata": metadata,
                "Content-Length": "0",
            }
        )
        with self._exchange("POST", "/api/transfer/uploads", headers) as response:
            if response.status != 201:
                raise self._fail(response, "creating the upload")
            location = response.getheader("Location", "")
        return urlsplit(location).path.removeprefix(self.prefix)

    def _offset(self, url: str) -> int | None:
        """Where an upload stands (HEAD), or None if it is gone or expired."""
        headers = self._headers(**{"Tus-Resumable": TUS_VERSION})
        with self._exchange("HEAD", url, headers) as response:
            if response.status in {404, 410}:
                return None
            if response.status != 200:
                raise self._fail(response, "asking where the upload stands")
            return int(response.getheader("Upload-Offset", "0"))

    def _patch(
        self, url: str, f: BinaryIO, offset: int, local: LocalFile, progress: _Progress
    ) -> int:
        """Send one chunk; returns the new offset."""
        chunk = os.pread(f.fileno(), min(TUS_CHUNK, local.size - offset), offset)
        if len(chunk) < min(TUS_CHUNK, local.size - offset):
            raise Retry(f"{local.path} got shorter while it was being sent")
        checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
        headers = self._headers(
            **{
                "Tus-Resumable": TUS_VERSION,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
                "Upload-Checksum": f"sha256 {checksum}",
            }
        )
        with self._exchange("PATCH", url, headers, chunk) as response:
            if response.status == 204:
                progress.advance(len(chunk))
                return int(response.getheader("Upload-Offset", str(offset + len(chunk))))
            if response.status == 409:  # we were behind or ahead: the server's offset wins
                moved_to = int(response.getheader("Upload-Offset", "0"))
                progress.start(moved_to)
                return moved_to
            if response.status == 460:
                raise self._checksum_failure(url, local)
            raise self._fail(response, f"sending bytes {offset}-{offset + len(chunk) - 1}")

    def _checksum_failure(self, url: str, local: LocalFile) -> ClientError | Retry:
        """A 460: a chunk garbled on the way (retry it), or the whole file is wrong."""
        if self._offset(url) is not None:
            return Retry("a chunk arrived garbled and was discarded")
        if local.changed():
            return Retry(f"{local.path} changed while it was being sent")
        return ClientError(
            "the server received bytes whose SHA-256 is not the file's; it kept nothing",
            ExitCode.CHECKSUM,
            "checksum_mismatch",
        )

    # -- pull --

    def _download_path(self, file_id: str) -> str:
        return f"/transfer/files/{quote(file_id)}/download"

    def stat(self, file_id: str) -> Remote:
        with self._exchange("HEAD", self._download_path(file_id), self._headers()) as response:
            if response.status != 200:
                raise self._fail(response, f"looking up {file_id}")
            etag = (response.getheader("ETag") or "").strip('"')
            if not wire.SHA256_HEX.match(etag):
                raise ClientError(f"the server gave no SHA-256 for {file_id} (ETag {etag!r})")
            return Remote(
                file_id,
                _disposition_name(response.getheader("Content-Disposition", "")) or file_id,
                int(response.getheader("Content-Length", "0")),
                etag,
            )

    def pull(self, remote: Remote, part: _PartFile, progress: _Progress) -> None:
        headers = self._headers(
            Range=f"bytes={part.position}-", **{"If-Range": f'"{remote.sha256}"'}
        )
        with self._exchange("GET", self._download_path(remote.file_id), headers) as response:
            if response.status == 200 and part.position:
                note("the server sent the whole file, not the rest: starting again")
                part.restart()
                progress.start(0)
            elif response.status != 206 and not (response.status == 200 and not part.position):
                raise self._fail(response, f"downloading {remote.file_id}")
            part.receive(response.readinto, progress)


def _disposition_name(header: str) -> str | None:
    """The exact name from ``filename*=UTF-8''...`` (or the plain ``filename``)."""
    match = re.search(r"filename\*=UTF-8''([^;\s]+)", header, re.IGNORECASE)
    if match:
        return unquote(match.group(1))
    match = re.search(r'filename="([^"]*)"', header)
    return match.group(1) if match else None


class _ResumeCache:
    """Upload URLs of unfinished tus pushes, so a later run picks up where one stopped.

    Keyed by server, key id, and the file's name, size and SHA-256 (a changed
    file is a new key). Only URLs are kept, never a key's secret.
    """

    def __init__(self) -> None:
        root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        self.path = Path(root) / "flaskmono" / "tus-uploads.json"

    @staticmethod
    def key(base: str, api_key: str, local: LocalFile) -> str:
        key_id = parse_key(api_key)[0]
        return f"{base}|{key_id}|{local.name}|{local.size}|{local.sha256}"

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: start afresh
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, str]) -> None:
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs a resume
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(data, indent=1))
            os.replace(temporary, self.path)

    def get(self, key: str) -> str | None:
        return self._load().get(key)

    def put(self, key: str, url: str) -> None:
        self._save({**self._load(), key: url})

    def forget(self, key: str) -> None:
        data = self._load()
        if data.pop(key, None) is not None:
            self._save(data)
