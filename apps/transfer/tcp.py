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
server: one thread per connection, each running a
:class:`~apps.transfer.tcp_session.Session`.

Before a client has proven its key it holds nothing that others need: the
whole pre-auth phase (TLS handshake, challenge, answer) has one deadline,
``TRANSFER_SERVER_AUTH_TIMEOUT``; at most ``TRANSFER_SERVER_MAX_CLIENTS``
connections wait in it at once (a new one cuts the oldest); and only an
authenticated client takes one of the ``TRANSFER_SERVER_MAX_CLIENTS`` slots.
Connections that drip bytes can therefore no longer keep real clients out.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import signal
import socket
import socketserver
import ssl
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from flask import Flask

from apps.transfer.tcp_session import Session

log = logging.getLogger(__name__)


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
    (over TLS that needs a handshake); past three times the limit (waiting to
    authenticate, served, being refused) a connection is closed at once, so a
    flood cannot make threads without bound.
    """

    allow_reuse_address = True  # a restart must not wait for TIME_WAIT sockets
    daemon_threads = False  # close() joins them: a push in flight records its progress
    request_queue_size = 128

    def __init__(self, app: Flask, host: str, port: int, tls: ssl.SSLContext | None = None):
        config = app.config
        self.app = app
        self.tls = tls
        self.idle_timeout = float(config["TRANSFER_SERVER_TIMEOUT"])
        self.auth_timeout = float(config["TRANSFER_SERVER_AUTH_TIMEOUT"])
        clients = config["TRANSFER_SERVER_MAX_CLIENTS"]
        self.slots = threading.BoundedSemaphore(clients)
        self.max_unproven = clients
        self._unproven: OrderedDict[socket.socket, threading.Timer] = OrderedDict()
        self._threads_left = threading.BoundedSemaphore(3 * clients)
        # Unknown keys are checked against this, so they take as long as a wrong answer.
        self.dummy_secret = secrets.token_urlsafe(32).encode()
        self._open: set[socket.socket] = set()
        self._busy: set[socket.socket] = set()  # in the middle of an operation (a push, a pull)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when an operation ends
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

    def await_proof(self, sock: socket.socket) -> None:
        """Start the pre-auth deadline for *sock*; past the bound, cut the oldest waiting one."""
        timer = threading.Timer(self.auth_timeout, self._too_slow, (sock,))
        timer.daemon = True
        with self._lock:
            if len(self._unproven) >= self.max_unproven:
                oldest, its_timer = self._unproven.popitem(last=False)
                its_timer.cancel()
                log.info("too many connections waiting to authenticate: dropped the oldest")
                _cut(oldest)
            self._unproven[sock] = timer
        timer.start()

    def proven(self, sock: socket.socket) -> bool:
        """*sock* authenticated: stop its deadline; False if it was cut meanwhile."""
        with self._lock:
            timer = self._unproven.pop(sock, None)
        if timer is not None:
            timer.cancel()
        return timer is not None

    def _too_slow(self, sock: socket.socket) -> None:
        with self._lock:
            if self._unproven.pop(sock, None) is None:
                return
        log.info("a connection did not authenticate within %g s: closed", self.auth_timeout)
        _cut(sock)

    @property
    def closing(self) -> bool:
        return self._closing

    @contextlib.contextmanager
    def operation(self, sock: socket.socket) -> Iterator[None]:
        """Mark *sock* busy with one operation: :meth:`close` lets it finish first."""
        with self._lock:
            self._busy.add(sock)
        try:
            yield
        finally:
            with self._lock:
                self._busy.discard(sock)
                self._idle.notify_all()

    def close(self, grace: float = 0.0) -> None:
        """Stop serving: let operations in flight finish, cut the rest, close the socket.

        Call after ``shutdown()`` (or when ``serve_forever`` never ran). Connections
        between operations are cut at once; a push or pull in flight gets up to
        *grace* seconds to finish (a graceful stop, as gunicorn gives requests), and
        is cut after that. A push cut keeps the bytes it received; its client
        resumes from them.
        """
        with self._lock:
            self._closing = True
            idle = [sock for sock in self._open if sock not in self._busy]
        for sock in idle:
            _cut(sock)
        with self._lock:
            if self._busy:
                log.info("waiting up to %g s for %d transfer(s) to finish", grace, len(self._busy))
            self._idle.wait_for(lambda: not self._busy, timeout=grace)
            connections = list(self._open)
        for sock in connections:
            _cut(sock)
        self.server_close()


class _Handler(socketserver.BaseRequestHandler):
    server: TransferServer

    def handle(self) -> None:
        server = self.server
        raw: socket.socket = self.request
        raw.settimeout(server.idle_timeout)
        server.await_proof(raw)  # the deadline covers the TLS handshake too
        try:
            sock = _wrap_tls(server, raw)
            if sock is None:
                return
            with contextlib.closing(sock), server.tracking(sock) as open_for_business:
                session = Session(server, sock, _peer(self.client_address))
                if not open_for_business:
                    session.refuse("shutting_down")
                else:
                    session.run(lambda: server.proven(raw))
        finally:
            server.proven(raw)  # no deadline left behind, however the connection ended


def _wrap_tls(server: TransferServer, raw: socket.socket) -> socket.socket | None:
    if server.tls is None:
        return raw
    try:
        return server.tls.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as exc:  # a plain-TCP client, a scanner, a timeout
        log.info("TLS handshake failed: %s", exc)
        return None


def _cut(sock: socket.socket) -> None:
    """Close a connection under its thread (at the socket level: it may be mid TLS read)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _peer(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


#: Seconds a stop (SIGTERM, SIGINT) gives the transfers in flight to finish.
STOP_GRACE = 30.0


def serve(server: TransferServer, grace: float = STOP_GRACE) -> None:
    """Serve until SIGTERM or SIGINT, let transfers in flight finish, close, and return."""

    def stop(signum: int, frame: Any) -> None:
        # shutdown() waits for serve_forever(), which runs on this very thread.
        threading.Thread(target=server.shutdown, name="transfer-server-stop").start()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.close(grace)
