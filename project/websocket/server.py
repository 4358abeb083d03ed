"""WebSocket serving inside a Flask view, on whichever server runs the app.

The protocol (:mod:`project.websocket.protocol`) does no I/O; this module drives
it over the raw client socket that the server exposes in the WSGI environ:

* werkzeug's dev server (``manage.py runserver``): ``environ["werkzeug.socket"]``;
* gunicorn's ``gthread`` worker: ``environ["gunicorn.socket"]``, one thread per socket;
* gunicorn's ``gevent`` worker: the same key, one greenlet per socket; use it for
  thousands of concurrent sockets.

After the 101 nothing but frames is ever written: when the handler is done the
view returns a response whose body raises ``ConnectionResetError`` when the
server starts to send it. Both servers treat that as a client that went away
and write nothing (flask-sock instead lets werkzeug append ``HTTP/1.1 200 OK``
after the close frame). The close echo is sent, and the peer's awaited,
before the view returns.

Sends may come from any thread (the broker's fan-out, the keepalive), so every
use of the protocol object holds one lock; the bytes go out through a
:class:`~project.websocket.sender.Sender`, which never blocks the caller.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, current_app, request

from project.outages import OUTAGES, log_outage
from project.websocket import handshake
from project.websocket.exceptions import ConnectionClosed, HandshakeError, ProtocolError
from project.websocket.protocol import (
    BinaryMessage,
    CloseCode,
    Connection,
    Pong,
    PreparedText,
    State,
    TextMessage,
)
from project.websocket.sender import Sender

log = logging.getLogger(__name__)

READ_SIZE = 65536
_open_sockets: weakref.WeakSet[WebSocket] = weakref.WeakSet()
#: Set by :func:`close_all`: the process is on its way out and takes no new sockets.
_stopping = threading.Event()


class WebSocket:
    """An open server-side WebSocket: blocking ``receive`` and thread-safe ``send``."""

    def __init__(
        self,
        sock: socket.socket,
        connection: Connection,
        *,
        ping_interval: float,
        ping_timeout: float,
        close_timeout: float,
        max_queue: int = 1 << 20,
        subprotocol: str | None = None,
    ):
        self.sock = sock
        self.connection = connection
        self.subprotocol = subprotocol
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self._lock = threading.Lock()
        self._sender = Sender(sock, max_queue)
        self._ping_sent_at: float | None = None
        self._torn_down = False
        self._finished = threading.Event()  # set once the closing handshake is over
        sock.settimeout(ping_interval)
        _open_sockets.add(self)

    @property
    def closed(self) -> bool:
        return self.connection.state is not State.OPEN

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    def _flush(self) -> None:
        """Hand what the protocol queued to the sender (caller holds the lock).

        Raises:
            ConnectionClosed: the peer is gone, or so far behind that it was dropped.
        """
        data = self.connection.data_to_send()
        if not data or self._sender.write(data):
            return
        if not self._sender.failed:
            self._drop_slow_peer()
        self.connection.state = State.CLOSED  # nothing more goes out; no echo is awaited
        self.connection.close_code = self.connection.close_code or CloseCode.GOING_AWAY
        raise ConnectionClosed(self.connection.close_code)

    def _drop_slow_peer(self) -> None:
        """More than ``max_queue`` bytes wait for a peer that does not read: close with 1013.

        Its client reconnects and fetches what it missed by id; meanwhile nobody
        else waits for it, and it holds no more than the bound in memory.
        """
        log.info("websocket peer fell %d bytes behind; closing (1013)", self._sender.pending)
        self._sender.discard_queued()
        if self.connection.state is State.OPEN:
            self.connection.send_close(CloseCode.TRY_AGAIN_LATER, "too far behind; reconnect")
        self._sender.write(self.connection.data_to_send(), force=True)  # if it ever reads
        self.connection.close_code = CloseCode.TRY_AGAIN_LATER
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)  # wakes the reader, which then tears down

    def send(self, message: str | bytes | PreparedText) -> None:
        """Send a text (``str`` or a :class:`PreparedText` broadcast) or binary (``bytes``) message.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        with self._lock:
            if self.connection.state is not State.OPEN:
                raise ConnectionClosed(self.connection.close_code)
            if isinstance(message, str):
                self.connection.send_text(message)
            elif isinstance(message, PreparedText):
                self.connection.send_prepared(message)
            else:
                self.connection.send_binary(message)
            self._flush()

    def wait_sent(self, timeout: float) -> bool:
        """Wait until every message sent so far is handed to the kernel; False on timeout."""
        return self._sender.wait_written(timeout)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake; the reader thread waits for the echo."""
        with self._lock:
            if self.connection.state is State.OPEN:
                self.connection.send_close(code, reason)
                with contextlib.suppress(ConnectionClosed):
                    self._flush()

    def receive(self) -> str | bytes:
        """The next message, answering pings and keeping the peer alive meanwhile.

        Messages are parsed one at a time from what has arrived: a burst of
        compressed frames costs one inflated message in memory, not all of them.

        Raises:
            ConnectionClosed: the peer closed, broke the protocol, or stopped answering.
        """
        while True:
            message = self._next_message()
            if message is not None:
                return message
            if self.connection.state is State.CLOSED:
                raise ConnectionClosed(self.connection.close_code)
            self._read_once()

    def _next_message(self) -> str | bytes | None:
        """The first complete data message received, control frames answered on the way."""
        found: str | bytes | None = None
        with self._lock:
            try:
                for event in self.connection.events():
                    if isinstance(event, TextMessage | BinaryMessage):
                        found = event.data
                        break  # the rest stays in the protocol's buffer for the next call
                    if isinstance(event, Pong):
                        self._ping_sent_at = None
                    # Ping and Close: the answer is queued; flushed below
            except ProtocolError as exc:
                log.info("websocket protocol error: %s", exc)
            with contextlib.suppress(ConnectionClosed):
                self._flush()
        return found

    def _read_once(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except TimeoutError:
            self._keepalive()
            return
        except OSError:
            data = b""
        if not data:  # the TCP connection ended without a close frame (1006)
            self.connection.state = State.CLOSED
            self.connection.close_code = self.connection.close_code or 1006
            return
        with self._lock:
            self.connection.receive_data(data)

    def _keepalive(self) -> None:
        """Called when the socket was silent for ``ping_interval`` seconds."""
        now = time.monotonic()
        with self._lock:
            if self.connection.state is State.CLOSING:
                # We sent a close and the echo never came: give up on the peer.
                self.connection.state = State.CLOSED
                return
            if self._ping_sent_at is not None and now - self._ping_sent_at > self.ping_timeout:
                log.info("websocket peer did not answer a ping; closing")
                self.connection.send_close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                self.connection.state = State.CLOSED
            elif self._ping_sent_at is None:
                self.connection.send_ping(b"keepalive")
                self._ping_sent_at = now
            with contextlib.suppress(ConnectionClosed):
                self._flush()

    def finish(self) -> None:
        """Complete the closing handshake and release the socket's write side.

        Called once the handler returned: close with 1000 if it did not, wait a
        bounded time for the echo, then shut the socket down so the server's
        own close finds nothing left to send.
        """
        if self._torn_down:
            return
        self._torn_down = True
        self.close(CloseCode.NORMAL)
        with contextlib.suppress(OSError):  # the socket may be shut down already
            self.sock.settimeout(min(self.close_timeout, 1.0))
        deadline = time.monotonic() + self.close_timeout
        while self.connection.state is not State.CLOSED and time.monotonic() < deadline:
            try:
                data = self.sock.recv(READ_SIZE)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            with self._lock:
                self.connection.receive_data(data)
                try:
                    for _ in self.connection.events():
                        pass
                except ProtocolError:
                    pass
                with contextlib.suppress(ConnectionClosed):
                    self._flush()
        self.connection.state = State.CLOSED
        self._sender.drain(max(0.0, deadline - time.monotonic()))  # the close frame, at least
        with contextlib.suppress(OSError):  # the peer may have closed already
            self.sock.shutdown(socket.SHUT_RDWR)
        _open_sockets.discard(self)
        self._finished.set()

    def __iter__(self) -> Iterator[str | bytes]:
        """Messages until the connection closes."""
        while True:
            try:
                yield self.receive()
            except ConnectionClosed:
                return


def close_all(
    code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", wait: float = 5.0
) -> int:
    """Close every open socket in this process (on shutdown); returns how many.

    Waits up to *wait* seconds for their closing handshakes to complete. A
    process that exits straight after sending its close frames leaves the
    clients' answers unread, and the kernel then resets the connections
    instead of closing them: a client that had not yet read our close frame
    loses it and sees 1006 rather than 1001, and so does not know to reconnect
    politely. Waiting makes a stop look the same however busy the machine is.
    """
    _stopping.set()
    sockets = list(_open_sockets)
    for ws in sockets:
        ws.close(code, reason)
    deadline = time.monotonic() + wait
    for ws in sockets:
        ws._finished.wait(max(0.0, deadline - time.monotonic()))
    return len(sockets)


class _NothingMoreToSend:
    """A response body that tells the server the client is gone, so it writes nothing."""

    def __iter__(self) -> Iterator[bytes]:
        raise ConnectionResetError(errno.ECONNRESET, "WebSocket closed")


def request_headers() -> dict[str, str]:
    """This request's headers, names lower-cased, repeated ones joined as RFC 9110 allows."""
    names = {name.lower() for name, _ in request.headers.items()}
    return {name: ", ".join(request.headers.getlist(name)) for name in names}


def bytes_read_past_the_request(environ: dict[str, Any], sock: socket.socket) -> bytes:
    """What the server's HTTP reader took off the wire after the request's headers.

    A client may send its first frame in the same TCP write as the handshake;
    those bytes then sit in the server's read buffer, not in the socket, and
    must reach the protocol (they were lost before). gunicorn keeps them in its
    request's unreader; werkzeug in the buffered reader that is ``wsgi.input``.
    Neither gives a public way to take them, so each is read without waiting.
    """
    stream = environ.get("wsgi.input")
    unreader = getattr(getattr(stream, "reader", None), "unreader", None)
    buffered = getattr(unreader, "buf", None)
    if isinstance(buffered, io.BytesIO):  # gunicorn
        if not buffered.getbuffer().nbytes:
            return b""
        data: bytes = unreader.read()  # type: ignore[union-attr]  # only what is buffered
        return data
    if isinstance(stream, io.BufferedReader):  # werkzeug
        timeout = sock.gettimeout()
        sock.setblocking(False)  # peek() then returns what is buffered, never waits
        try:
            return stream.peek(READ_SIZE) and stream.read1(READ_SIZE)
        except (BlockingIOError, OSError):
            return b""
        finally:
            sock.settimeout(timeout)
    return b""


def raw_socket(environ: dict[str, Any]) -> socket.socket | None:
    sock = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
    return sock if isinstance(sock, socket.socket) else None


def serve(
    handler: Callable[[WebSocket], None],
    *,
    subprotocols: tuple[str, ...] = (),
    owner: int | None = None,
) -> Response:
    """Answer this request as a WebSocket and run *handler* on it; call from a view.

    A request that is not a valid upgrade gets an ordinary HTTP error response.
    With *owner* (a user id), the socket takes one of that user's
    ``WEBSOCKET_MAX_PER_USER`` slots, across every worker and host, for its
    whole life; with none left the answer is 429.
    """
    config = current_app.config
    try:
        accepted = handshake.validate(
            request.method,
            request.environ.get("SERVER_PROTOCOL", ""),
            request_headers(),
            host=request.host,
            scheme=request.scheme,
            allowed_origins=config["WEBSOCKET_ALLOWED_ORIGINS"],
            subprotocols=subprotocols,
            compression=config["WEBSOCKET_COMPRESSION"],
        )
    except HandshakeError as exc:
        return Response(exc.message + "\n", exc.status, exc.headers, mimetype="text/plain")
    if _stopping.is_set():  # sockets closed on the way out; a new one here would be cut again
        return Response(
            "this server is stopping; connect again\n", 503, {"Retry-After": "1"},
            mimetype="text/plain",
        )  # fmt: skip
    sock = raw_socket(request.environ)
    if sock is None:
        return Response(
            "this server cannot switch protocols to WebSocket\n", 501, mimetype="text/plain"
        )
    slots = current_app.extensions["websocket_slots"]
    if owner is not None and not slots.acquire(owner):
        limit = config["WEBSOCKET_MAX_PER_USER"]
        return Response(
            f"too many open sockets: at most {limit} per user; close one and try again\n",
            429,
            {"Retry-After": "5"},
            mimetype="text/plain",
        )
    try:
        early = bytes_read_past_the_request(request.environ, sock)
        try:
            sock.sendall(accepted.response())
        except OSError as exc:  # the client gave up before the handshake's answer
            log.info("websocket client left during the handshake: %s", exc)
        else:
            _run(sock, accepted, handler, early)
    finally:
        if owner is not None:
            slots.release(owner)
    return Response(_NothingMoreToSend(), 200)


def _run(
    sock: socket.socket,
    accepted: handshake.Handshake,
    handler: Callable[[WebSocket], None],
    early: bytes = b"",
) -> None:
    """Drive one upgraded connection: run the handler, then close it properly."""
    config = current_app.config
    ws = WebSocket(
        sock,
        Connection(config["WEBSOCKET_MAX_MESSAGE_SIZE"], deflate=accepted.deflate),
        ping_interval=config["WEBSOCKET_PING_INTERVAL"],
        ping_timeout=config["WEBSOCKET_PING_TIMEOUT"],
        close_timeout=config["WEBSOCKET_CLOSE_TIMEOUT"],
        max_queue=config["WEBSOCKET_MAX_QUEUE"],
        subprotocol=accepted.subprotocol,
    )
    if early:
        ws.connection.receive_data(early)  # frames sent along with the handshake
    try:
        handler(ws)
    except ConnectionClosed:
        pass
    except OUTAGES as exc:  # expected on a bad day: one line, and the client retries later
        log_outage(exc, "serving a websocket")
        ws.close(CloseCode.TRY_AGAIN_LATER, "service unavailable")
    except Exception:
        log.exception("websocket handler failed")
        ws.close(CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        ws.finish()
