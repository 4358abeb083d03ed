"""Our WebSocket server under the real servers, talking to the `websockets` library as a client.

Three deployments: ``manage.py runserver`` (werkzeug, embedded stack), and
gunicorn with the ``gthread`` and ``gevent`` workers (MariaDB + Redis).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.servers import ROOT, Server

# make test-fast leaves these out: each test starts runserver and gunicorn (gthread, gevent).
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["threads", "gevent"])
def test_a_frame_larger_than_the_send_buffer_arrives_whole(kind: str) -> None:
    """What the kernel does not take at once is queued and written after it, in order.

    Run in a process of its own: under gevent, as in a gevent worker, everything is
    monkey-patched first (the sender's writer is then a greenlet, not a thread).
    """
    prelude = "from gevent import monkey; monkey.patch_all(); " if kind == "gevent" else ""
    code = (
        prelude + "from tests.project.websocket.test_servers import partial_sends; partial_sends()"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "same bytes, same order"


def partial_sends() -> None:
    """Four messages through a 4 KiB send buffer to a reader that lags; prints the verdict."""
    import threading

    from project.websocket.protocol import Connection, PreparedText
    from project.websocket.server import WebSocket

    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # force partial sends
    ws = WebSocket(
        ours, Connection(), ping_interval=5, ping_timeout=5, close_timeout=1, max_queue=8 << 20
    )
    messages: list[str | bytes | PreparedText] = [
        os.urandom(700 * 1024),
        "é" * 300_000,
        PreparedText("shared " * 50_000),
        b"small",
    ]
    expected = b"".join(
        server_frame(m.text if isinstance(m, PreparedText) else m) for m in messages
    )

    def write() -> None:
        for message in messages:
            ws.send(message)
        assert ws.wait_sent(30)
        ours.shutdown(socket.SHUT_WR)

    received = bytearray()
    thread = threading.Thread(target=write)
    thread.start()
    while chunk := peer.recv(65536):
        received += chunk
        time.sleep(0.0005)  # a slow reader: the send buffer fills
    thread.join()
    ours.close()
    peer.close()
    print("same bytes, same order" if bytes(received) == expected else "different bytes")


def server_frame(payload: str | bytes) -> bytes:
    """An unmasked server frame, as ``encode_frame`` builds it (text for ``str``)."""
    from project.websocket.protocol import encode_frame

    if isinstance(payload, str):
        return encode_frame(0x1, payload.encode())
    return encode_frame(0x2, payload)


# -- the websockets library as a client ----------------------------------------------------------


def test_echo_text_and_binary_with_a_real_client(server: Server) -> None:
    with connect(server.ws + "/ws/echo", max_size=2**22) as ws:
        ws.send("héllo, wörld ✓")
        assert ws.recv() == "héllo, wörld ✓"
        payload = os.urandom(900 * 1024)  # under the 1 MiB message limit
        ws.send(payload)
        assert ws.recv() == payload
        ws.send("")
        assert ws.recv() == ""
    assert ws.close_code == 1000


def test_many_messages_in_a_row_stay_in_order(server: Server) -> None:
    with connect(server.ws + "/ws/echo") as ws:
        for i in range(200):
            ws.send(f"message {i}")
        assert [ws.recv() for _ in range(200)] == [f"message {i}" for i in range(200)]


def test_a_message_over_the_limit_closes_with_1009(server: Server) -> None:
    with connect(server.ws + "/ws/echo", max_size=None) as ws:
        ws.send(b"x" * (2**20 + 1))
        with pytest.raises(ConnectionClosed):
            ws.recv()
    assert ws.close_code == 1009


def test_a_bad_handshake_gets_an_http_error(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(server.ws + "/ws/echo", origin="http://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(200).startswith(b"HTTP/1.1 426")


# -- raw bytes on the wire -----------------------------------------------------------------------


def raw_handshake(server: Server, path: str = "/ws/echo") -> tuple[socket.socket, bytes]:
    """Open a socket and upgrade it; returns the socket and bytes read past the 101 headers."""
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "the server closed during the handshake"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock, rest


def client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + masked


def read_to_eof(sock: socket.socket, initial: bytes = b"") -> bytes:
    data = initial
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def parse_frames(data: bytes, *, cut_off: bool = False) -> list[tuple[int, bytes]]:
    """Server frames; fails if anything that is not a well-formed frame is on the wire.

    With *cut_off*, a truncated last frame (a connection dropped mid-frame) is left out.
    """
    frames = []
    while data:
        if cut_off and (len(data) < 2 or len(data) < sum(_header(data))):
            break
        assert len(data) >= 2, f"trailing bytes that are not a frame: {data!r}"
        assert not data[1] & 0x80, "server frames are never masked"
        offset, length = _header(data)
        assert len(data) >= offset + length, f"a truncated frame: {data!r}"
        frames.append((data[0] & 0x0F, data[offset : offset + length]))
        data = data[offset + length :]
    return frames


def _header(data: bytes) -> tuple[int, int]:
    """The header size and payload length of the server frame at the start of *data*."""
    length = data[1] & 0x7F
    if length == 126:
        return 4, struct.unpack_from("!H", data, 2)[0]
    if length == 127:
        return 10, struct.unpack_from("!Q", data, 2)[0]
    return 2, length


def test_after_the_101_nothing_but_frames_is_written(server: Server) -> None:
    """flask-sock's werkzeug integration appends 'HTTP/1.1 200 OK' after the close; we must not."""
    sock, rest = raw_handshake(server)
    with sock:
        sock.sendall(client_frame(0x1, b"ping?"))
        sock.sendall(client_frame(0x8, struct.pack("!H", 1000) + b"bye"))
        frames = parse_frames(read_to_eof(sock, rest))
    assert frames[0] == (0x1, b"ping?")
    assert frames[-1] == (0x8, struct.pack("!H", 1000) + b"bye"), "the close is echoed"
    assert len(frames) == 2


def test_a_protocol_error_closes_with_1002_and_nothing_else(server: Server) -> None:
    sock, rest = raw_handshake(server)
    with sock:
        sock.sendall(struct.pack("!BB", 0x81, 5) + b"plain")  # an unmasked client frame
        frames = parse_frames(read_to_eof(sock, rest))
    assert frames == [(0x8, struct.pack("!H", 1002) + b"client frames must be masked")]


def test_a_silent_peer_is_pinged_then_dropped(server: Server) -> None:
    """Keepalive (interval and timeout 1 s here): a peer that never answers pings is closed."""
    sock, rest = raw_handshake(server)
    started = time.monotonic()
    with sock:
        frames = parse_frames(read_to_eof(sock, rest))
    assert frames[0] == (0x9, b"keepalive")
    assert frames[-1][0] == 0x8 and frames[-1][1][:2] == struct.pack("!H", 1011)
    assert time.monotonic() - started < 15


def test_answering_pings_keeps_a_quiet_connection_open(server: Server) -> None:
    with connect(server.ws + "/ws/echo") as ws:  # the library answers pings itself
        time.sleep(3.5)
        ws.send("still here")
        assert ws.recv() == "still here"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_the_server_closes_sockets_with_1001(server: Server, stop: int) -> None:
    """Ctrl-C, systemd's stop or a plain kill: clients are told to reconnect (1001), not cut off.

    The server waits for each client's answer to its close before it exits, so
    the close frame cannot be lost to a reset however busy the machine is.
    """
    with connect(server.ws + "/ws/echo") as ws:
        ws.send("hello")
        assert ws.recv() == "hello"
        server.proc.send_signal(stop)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)
    assert ws.close_code == 1001
    assert server.proc.wait(timeout=20) is not None


@pytest.mark.parametrize("server", ["gthread", "gevent"], indirect=True)
def test_a_graceful_reload_closes_sockets_with_1001_and_keeps_serving(server: Server) -> None:
    """``systemctl reload`` (SIGHUP to gunicorn): new workers serve, old sockets get 1001."""
    with connect(server.ws + "/ws/echo") as ws:
        ws.send("hello")
        assert ws.recv() == "hello"
        server.proc.send_signal(signal.SIGHUP)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)
    assert ws.close_code == 1001
    assert server.proc.poll() is None
    deadline = time.monotonic() + 20
    while True:  # the client reconnects, as a page would, and finds the new workers
        try:
            with connect(server.ws + "/ws/echo", open_timeout=5) as again:
                again.send("back")
                assert again.recv(timeout=5) == "back"
            break
        except (OSError, InvalidStatus, ConnectionClosed):
            assert time.monotonic() < deadline, "no new worker answered within 20 s of SIGHUP"
            time.sleep(0.2)
