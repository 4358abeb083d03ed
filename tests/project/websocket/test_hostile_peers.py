"""Peers that lie, flood or stop reading, against the real servers (runserver, gthread, gevent).

Each test says in its docstring which attack it stops. The peers are raw
sockets, so they can do what no well-behaved client library would.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

import pytest
from websockets.sync.client import connect

from tests.project.websocket.test_servers import parse_frames, raw_handshake
from tests.servers import Server

# make test-fast leaves these out: each test starts real servers and waits out timeouts.
pytestmark = pytest.mark.slow


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A masked client frame of any length."""
    mask = os.urandom(4)
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        header = struct.pack("!BB", first, 0x80 | len(payload))
    elif len(payload) < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, len(payload))
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_until_closed(sock: socket.socket, initial: bytes, seconds: float) -> tuple[bytes, bool]:
    """What the server writes until it closes the connection; and whether it did in time."""
    sock.settimeout(1)
    data, deadline = initial, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def test_a_flood_of_empty_fragments_is_closed_with_1009(server: Server) -> None:
    """Stops the fragment flood: one byte of text, then hundreds of thousands of empty
    continuation frames (each free under the message-size cap) grew a worker by tens of MiB
    and were never refused. A message may have a bounded number of fragments."""
    sock, rest = raw_handshake(server)
    with sock:
        sock.sendall(frame(0x1, b"x", fin=False))
        empty = frame(0x0, fin=False)
        try:
            for _ in range(40):  # 40 x 1,000 fragments: far past the cap for a 1 MiB message
                sock.sendall(empty * 1000)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us mid-flood: what the test wants to see below
        data, closed = read_until_closed(sock, rest, 20)
        frames = parse_frames(data)
    assert closed
    closes = [payload for opcode, payload in frames if opcode == 0x8]
    assert closes, f"no close frame; frames: {[op for op, _ in frames][:10]}"
    assert closes[0][:2] == struct.pack("!H", 1009)
    assert b"fragments" in closes[0]


def test_a_message_in_many_fragments_still_arrives(server: Server) -> None:
    """The fragment cap leaves room for clients that fragment finely (1,000 of 64 bytes)."""
    sock, rest = raw_handshake(server)
    payload = os.urandom(64 * 1000)
    with sock:
        pieces = [payload[i : i + 64] for i in range(0, len(payload), 64)]
        data = frame(0x2, pieces[0], fin=False)
        data += b"".join(frame(0x0, p, fin=False) for p in pieces[1:-1])
        data += frame(0x0, pieces[-1], fin=True)
        sock.sendall(data + frame(0x8, struct.pack("!H", 1000)))
        frames = parse_frames(read_until_closed(sock, rest, 20)[0])
    assert frames[0] == (0x2, payload)


def test_a_peer_that_stops_reading_is_dropped_and_others_go_on(server: Server) -> None:
    """Stops one slow reader from stalling its server: a peer that sends and never reads
    its echoes has at most WEBSOCKET_MAX_QUEUE bytes waiting for it, then is dropped (1013),
    while another socket on the same server keeps echoing at once."""
    sock, rest = raw_handshake(server)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    message = frame(0x2, os.urandom(60_000))
    with sock, connect(server.ws + "/ws/echo") as healthy:
        sent = 0
        sock.settimeout(5)
        try:
            for _ in range(200):  # 12 MB of echoes it will not read, far past the 1 MiB bound
                sock.sendall(message)
                sent += 1
                healthy.send(f"still here {sent}")
                assert healthy.recv(timeout=10) == f"still here {sent}"
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the server gave up on us mid-flood
        data, closed = read_until_closed(sock, rest, 30)
        healthy.send("after")
        assert healthy.recv(timeout=10) == "after"
    assert closed, "the server kept a peer that did not read"
    closes = [frame for frame in parse_frames(data, cut_off=True) if frame[0] == 0x8]
    if closes:  # the close frame may not fit into a peer's full window; the drop must happen
        assert closes[0][1][:2] == struct.pack("!H", 1013)


def test_a_frame_sent_with_the_handshake_is_not_lost(server: Server) -> None:
    """A client may send its first frame in the same TCP write as the upgrade request; the
    server's HTTP reader had buffered those bytes, and they were dropped (no answer ever)."""
    port = int(server.url.rsplit(":", 1)[1])
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request + frame(0x1, b"first") + frame(0x8, struct.pack("!H", 1000)))
        data, _ = read_until_closed(sock, b"", 10)
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert parse_frames(rest)[0] == (0x1, b"first")
