"""The TCP fast path's server: ``manage.py transfer-server``.

HTTP costs a large file little, but a plain socket costs it nothing: no
chunking, no request per 8 MiB, and ``sendfile(2)`` on both ends. The
protocol (``PROTOCOL.md`` beside this file) is length-prefixed JSON control
messages with raw file bytes between them, after an HMAC challenge on an API
key. The bytes go through :func:`apps.transfer.storage.receive`, the same
writer as the tus server, so an upload started over one path can finish over
the other and a file is kept only once its SHA-256 matches the declared one.

The wire format (framing, the HMAC, the limits and error codes) is in
:mod:`apps.transfer.wire`, which the client shares; this module is only the
server: one thread per connection, one app context per operation, so an idle
connection holds no database connection. Refusals are
:class:`~apps.transfer.exceptions.TransferError` instances; their ``code`` is the reply.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import mimetypes
import secrets
import signal
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeGuard

from flask import Flask

from apps.transfer import models, storage, tusmeta
from apps.transfer.exceptions import OffsetMismatch, PeerClosed, ProtocolError, TransferError
from apps.transfer.models import TransferFile
from apps.transfer.names import clean_filename
from apps.transfer.wire import (
    FILE_ID,
    KEY_ID,
    NONCE_BYTES,
    SHA256_HEX,
    VERSION,
    auth_mac,
    encode_nonce,
    error_message,
    read_message,
    send_file,
    send_message,
)
from project.auth import key_secret, mark_key_used
from project.db import DatabaseError

log = logging.getLogger(__name__)

_DRAIN_SECONDS = 2.0  # how long an error reply waits for the peer's unread bytes before closing


# -- the server --------------------------------------------------------------------------------


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side context for the PEM files (TLS 1.2 or newer)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class TransferServer(socketserver.ThreadingTCPServer):
    """One thread per connection, at most ``TRANSFER_SERVER_MAX_CLIENTS`` served at once.

    Clients over the limit still get a thread, long enough to be told ``busy``
    (over TLS that needs a handshake); past twice the limit a connection is
    closed at once, so a flood cannot make threads without bound.
    """

    allow_reuse_address = True  # a restart must not wait for TIME_WAIT sockets
    daemon_threads = False  # close() joins them: a push in flight records its progress
    request_queue_size = 128

    def __init__(self, app: Flask, host: str, port: int, tls: ssl.SSLContext | None = None):
        config = app.config
        self.app = app
        self.tls = tls
        self.idle_timeout = float(config["TRANSFER_SERVER_TIMEOUT"])
        self.slots = threading.BoundedSemaphore(config["TRANSFER_SERVER_MAX_CLIENTS"])
        self._threads_left = threading.BoundedSemaphore(2 * config["TRANSFER_SERVER_MAX_CLIENTS"])
        # Unknown keys are checked against this, so they take as long as a wrong answer.
        self.dummy_secret = secrets.token_urlsafe(32).encode()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = False
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)

    @property
    def host(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._threads_left.acquire(blocking=False):
            self.shutdown_request(request)  # too many even to turn away politely
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._threads_left.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A bug, not a peer's doing: into the log with its traceback (not bare stderr)."""
        log.exception("unexpected error serving %s", _peer(client_address))

    @contextlib.contextmanager
    def tracking(self, sock: socket.socket) -> Iterator[bool]:
        """Register an open connection so :meth:`close` can cut it; yields False when closing."""
        with self._lock:
            closing = self._closing
            if not closing:
                self._open.add(sock)
        try:
            yield not closing
        finally:
            with self._lock:
                self._open.discard(sock)

    def close(self) -> None:
        """Cut every open connection, wait for their threads, close the listening socket.

        Call after ``shutdown()`` (or when ``serve_forever`` never ran). A push
        cut here keeps the bytes it received; its client resumes from them.
        """
        with self._lock:
            self._closing = True
            connections = list(self._open)
        for sock in connections:
            # The socket level, not SSLSocket.shutdown(): its thread may be inside a TLS read.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        self.server_close()


class _Handler(socketserver.BaseRequestHandler):
    server: TransferServer

    def handle(self) -> None:
        server = self.server
        raw: socket.socket = self.request
        raw.settimeout(server.idle_timeout)
        sock = _wrap_tls(server, raw)
        if sock is None:
            return
        with contextlib.closing(sock), server.tracking(sock) as open_for_business:
            session = _Session(server, sock, _peer(self.client_address))
            if not open_for_business:
                session.refuse("shutting_down")
            elif not server.slots.acquire(blocking=False):
                session.refuse("busy", "the server has as many clients as it serves at once")
            else:
                try:
                    session.run()
                finally:
                    server.slots.release()


def _wrap_tls(server: TransferServer, raw: socket.socket) -> socket.socket | None:
    if server.tls is None:
        return raw
    try:
        return server.tls.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as exc:  # a plain-TCP client, a scanner, a timeout
        log.info("TLS handshake failed: %s", exc)
        return None


def _peer(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class _User:
    id: int
    name: str


class _Body:
    """``readinto`` over the socket for the raw bytes of one PUSH (the :data:`storage.Reader`).

    :func:`storage.receive` calls it only once it holds the upload's lock and
    has checked the offset, so the ``ok`` reply with the offset is sent from
    the first call: the client never starts sending for an offset that is
    stale or an upload another connection is still writing.
    """

    def __init__(self, sock: socket.socket, upload: TransferFile, offset: int) -> None:
        self.sock, self.upload, self.offset = sock, upload, offset
        self.remaining = upload.size - offset
        self.started = 0.0  # monotonic time of the reply; 0 until then

    def __call__(self, view: memoryview) -> int:
        if not self.started:
            send_message(
                self.sock, {"ok": True, "upload_id": self.upload.id, "offset": self.offset}
            )
            self.started = time.monotonic()
        if not self.remaining:
            return 0  # past the declared size the next bytes are a control message
        n = self.sock.recv_into(view, min(len(view), self.remaining))
        self.remaining -= n
        return n

    @property
    def in_sync(self) -> bool:
        """Whether the next bytes on the wire are a control message (so the connection goes on)."""
        return not self.started or not self.remaining


class _Session:
    """One connection: the challenge, then operations until the peer leaves or errs."""

    def __init__(self, server: TransferServer, sock: socket.socket, peer: str) -> None:
        self.server, self.app, self.sock, self.peer = server, server.app, sock, peer
        self.user: _User | None = None

    def run(self) -> None:
        try:
            self.user = self._authenticate()
            if self.user is None:
                return
            operations: dict[str, Callable[[dict[str, Any]], bool]]
            operations = {"push": self.push, "pull": self.pull, "stat": self.stat}
            while True:
                request = read_message(self.sock)
                operation = operations.get(str(request.get("op")))
                if operation is None:
                    raise ProtocolError(f"unknown op {str(request.get('op'))[:40]!r}")
                if not operation(request):
                    return
        except PeerClosed:
            return  # a peer leaving between messages is how a session ends
        except ProtocolError as exc:
            self.refuse(exc.code, exc.message)
        except TimeoutError:
            self.refuse("timeout", f"nothing received for {self.server.idle_timeout:g} s")
        except DatabaseError:
            log.exception("database error serving %s", self.peer)
            self.refuse("internal")
        except OSError as exc:  # reset, broken pipe, TLS alerts: the peer is gone
            log.info("connection from %s ended: %s", self.peer, exc)

    def refuse(self, code: str, message: str | None = None) -> None:
        """Send an error, then close gracefully: read (and drop) what the peer still sends.

        Closing with unread bytes in the receive buffer makes the kernel send a
        reset, which can destroy the error reply before the client reads it.
        """
        with contextlib.suppress(OSError):
            send_message(self.sock, error_message(code, message))
            socket.socket.shutdown(self.sock, socket.SHUT_WR)
            self.sock.settimeout(_DRAIN_SECONDS)
            deadline = time.monotonic() + _DRAIN_SECONDS
            while time.monotonic() < deadline and self.sock.recv(1 << 16):
                pass

    def _reply(self, message: Mapping[str, Any]) -> None:
        send_message(self.sock, message)

    # -- authentication --

    def _authenticate(self) -> _User | None:
        nonce = secrets.token_bytes(NONCE_BYTES)
        self._reply({"type": "challenge", "version": VERSION, "nonce": encode_nonce(nonce)})
        answer = read_message(self.sock)
        key_id, mac = answer.get("key_id"), answer.get("mac")
        if answer.get("type") != "auth" or not isinstance(key_id, str) or not isinstance(mac, str):
            raise ProtocolError('expected {"type": "auth", "key_id", "mac"}')
        user = self._check_answer(nonce, key_id, mac)
        if user is None:
            log.info("auth failed for key %r from %s", key_id[:16], self.peer)
            self.refuse("auth_failed", "the key is unknown or revoked, or the answer is wrong")
            return None
        self._reply({"ok": True, "user": user.name})
        return user

    def _check_answer(self, nonce: bytes, key_id: str, mac: str) -> _User | None:
        with self.app.app_context():
            found = key_secret(key_id) if KEY_ID.match(key_id) else None
        secret = found[1] if found else self.server.dummy_secret
        # Compared even for an unknown key, so the time taken does not tell keys apart.
        matches = hmac.compare_digest(auth_mac(secret, nonce, key_id).encode(), mac.encode())
        if not matches or found is None:
            return None
        with self.app.app_context():
            mark_key_used(key_id)
        account = found[0]
        return _User(account.id, account.username)

    # -- operations (each returns whether the connection can go on) --

    def push(self, request: dict[str, Any]) -> bool:
        name, size, sha256 = _push_fields(request)
        assert self.user is not None
        with self.app.app_context():
            try:
                upload = _find_or_start(self.user.id, name, size, sha256)
            except TransferError as exc:
                return self._refused(name, exc, in_sync=True)
            body = _Body(self.sock, upload, upload.received)
            try:
                result = _receive(body)
            except TransferError as exc:
                return self._refused(name, exc, in_sync=body.in_sync)
            except OSError as exc:  # the client vanished or went silent; its bytes are kept
                self._log_push(body, upload, "interrupted", f" ({exc or type(exc).__name__})")
                return False
        if not result.complete:  # the client closed the connection mid-file
            self._log_push(body, upload, "interrupted", f" at byte {result.received}")
            return False
        self._reply(
            {"ok": True, "file_id": result.id, "sha256": result.sha256, "size": result.size}
        )
        self._log_push(body, result, "done")
        return True

    def _refused(self, name: str, exc: TransferError, in_sync: bool) -> bool:
        """Answer a refused push; a refusal mid-file also ends the connection."""
        assert self.user is not None
        log.info("push of %r by %s refused: %s", name, self.user.name, exc)
        if not in_sync:
            self.refuse(exc.code, exc.message)
            return False
        self._reply(error_message(exc.code, exc.message))
        return True

    def _log_push(self, body: _Body, upload: TransferFile, outcome: str, detail: str = "") -> None:
        moved = upload.size - body.offset - body.remaining
        self._log("push", outcome, upload, moved, body.started, body.offset, detail)

    def pull(self, request: dict[str, Any]) -> bool:
        file_id, offset = request.get("file_id"), request.get("offset", 0)
        if not _is_count(offset):
            raise ProtocolError("offset must be a whole number")
        file, handle = self._open_own(file_id)
        if file is None or handle is None:
            return True
        with handle:
            if offset > file.size:
                self._reply(error_message("bad_request", f"offset {offset} is past the end"))
                return True
            self._reply(_describe(file))
            started = time.monotonic()
            sent = 0
            try:
                sent = send_file(self.sock, handle, offset, file.size - offset)
            except OSError as exc:
                self._log("pull", "interrupted", file, sent, started, offset, f" ({exc})")
                return False
        self._log("pull", "done", file, sent, started, offset)
        return True

    def stat(self, request: dict[str, Any]) -> bool:
        file, handle = self._open_own(request.get("file_id"))
        if file is not None and handle is not None:
            handle.close()
            self._reply(_describe(file))
        return True

    def _open_own(self, file_id: Any) -> tuple[TransferFile | None, BinaryIO | None]:
        """The user's finished file and an open handle, or (None, None) after a not_found."""
        assert self.user is not None
        with self.app.app_context():
            valid = isinstance(file_id, str) and FILE_ID.match(file_id)
            file = models.get(file_id, owner_id=self.user.id) if valid else None
            if file is not None and file.complete:
                try:
                    return file, storage.open_file(file)
                except FileNotFoundError:
                    log.error("file %s is in the database but not on disk", file.id)
        self._reply(error_message("not_found", "no such file"))
        return None, None

    def _log(
        self,
        op: str,
        outcome: str,
        file: TransferFile,
        moved: int,
        started: float,
        offset: int,
        detail: str = "",
    ) -> None:
        """One line per transfer: who, what, how many bytes, how fast."""
        assert self.user is not None
        seconds = time.monotonic() - started if started else 0.0
        rate = moved / seconds / 1e6 if seconds > 0 else 0.0
        resumed = f" from byte {offset}" if offset else ""
        log.info(
            "%s %s: %s %s (%s, %d bytes) %d bytes%s in %.2f s, %.1f MB/s, from %s%s",
            *(op, outcome, self.user.name, file.id, file.filename, file.size),
            *(moved, resumed, seconds, rate, self.peer, detail),
        )


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _push_fields(request: dict[str, Any]) -> tuple[str, int, str]:
    name, size, sha256 = request.get("name"), request.get("size"), request.get("sha256")
    if not isinstance(name, str) or not _is_count(size):
        raise ProtocolError("push needs a name and a size in bytes")
    if not isinstance(sha256, str) or not SHA256_HEX.match(sha256):
        raise ProtocolError("push needs the file's sha256 as 64 hex digits")
    return clean_filename(name), size, sha256


def _describe(file: TransferFile) -> dict[str, Any]:
    name, sha256 = file.filename, file.sha256
    return {"ok": True, "file_id": file.id, "size": file.size, "sha256": sha256, "name": name}


def _find_or_start(owner_id: int, name: str, size: int, sha256: str) -> TransferFile:
    """The unfinished upload of these bytes under this name, or a new one."""
    found = models.find_resumable(owner_id, name, size, sha256)
    if found is not None:
        return found
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return storage.start_upload(
        owner_id,
        filename=name,
        size=size,
        content_type=content_type,
        # What a tus client would have sent, so HEAD shows the same for either path.
        metadata=tusmeta.encode({"filename": name, "filetype": content_type, "sha256": sha256}),
        expected_sha256=sha256,
    )


def _receive(body: _Body) -> TransferFile:
    """:func:`storage.receive`, asking once more if the upload moved on before the lock.

    Between looking the upload up and locking it, a connection that had just
    been cut may have recorded its last bytes; the offset it left is the one to use.
    """
    try:
        return storage.receive(body.upload, body.offset, body)
    except OffsetMismatch as exc:
        if body.started or exc.expected >= body.upload.size:
            raise
        body.offset, body.remaining = exc.expected, body.upload.size - exc.expected
        return storage.receive(body.upload, body.offset, body)


# -- running it --------------------------------------------------------------------------------


def make_server(app: Flask, host: str | None = None, port: int | None = None) -> TransferServer:
    """A bound server for *app* (TLS when ``TRANSFER_TLS_CERT`` and ``_KEY`` are both set).

    Raises:
        OSError: the address is in use or cannot be bound.
        ssl.SSLError, FileNotFoundError: the certificate or key cannot be loaded.
    """
    config = app.config
    cert, key = config["TRANSFER_TLS_CERT"], config["TRANSFER_TLS_KEY"]
    tls = tls_context(cert, key) if cert and key else None
    return TransferServer(
        app,
        config["TRANSFER_SERVER_HOST"] if host is None else host,
        config["TRANSFER_SERVER_PORT"] if port is None else port,
        tls,
    )


def serve(server: TransferServer) -> None:
    """Serve until SIGTERM or SIGINT, then close every connection and return."""

    def stop(signum: int, frame: Any) -> None:
        # shutdown() waits for serve_forever(), which runs on this very thread.
        threading.Thread(target=server.shutdown, name="transfer-server-stop").start()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.close()
