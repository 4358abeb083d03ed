"""permessage-deflate (RFC 7692): what offers are agreed to, and compressed messages on the wire.

Client messages are compressed here with zlib exactly as RFC 7692 section 7.2.1
describes (raw deflate, a sync flush, the trailing ``00 00 ff ff`` left off)
and sent through a :class:`Connection`, so the size limit, the RSV1 rules and
the server's own compressed frames are checked end to end.
"""

from __future__ import annotations

import os
import tracemalloc
import zlib

import pytest

from project.websocket.deflate import PerMessageDeflate, negotiate
from project.websocket.protocol import BinaryMessage, Connection, Ping, PreparedText, TextMessage
from tests.project.websocket.test_protocol import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    client_frame,
    client_header,
    close_payload,
    expect_failure,
    parse_frames,
    receive,
)

TAIL = b"\x00\x00\xff\xff"
MiB = 1 << 20


def deflate(data: bytes, compressor: zlib._Compress | None = None) -> bytes:
    """One message's payload as a client compresses it (section 7.2.1)."""
    compressor = compressor or zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def inflate(payload: bytes, decompressor: zlib._Decompress | None = None) -> bytes:
    """A server message's payload as a client decompresses it (section 7.2.2)."""
    decompressor = decompressor or zlib.decompressobj(wbits=-15)
    return decompressor.decompress(payload + TAIL)


def compressed_connection(max_message_size: int = MiB, **params: bool | int) -> Connection:
    return Connection(max_message_size, deflate=PerMessageDeflate(**params))  # type: ignore[arg-type]


# -- negotiation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "response", "agreed"),
    [
        ("permessage-deflate", "permessage-deflate", {}),
        ("Permessage-Deflate", "permessage-deflate", {}),
        ("permessage-deflate; client_max_window_bits", "permessage-deflate", {}),
        ("permessage-deflate; client_max_window_bits=10", "permessage-deflate", {}),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
            {"server_no_context_takeover": True},
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
            {"client_no_context_takeover": True},
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10",
            {"server_max_window_bits": 10},
        ),
        (
            'permessage-deflate; server_max_window_bits="12"',
            "permessage-deflate; server_max_window_bits=12",
            {"server_max_window_bits": 12},
        ),
        (
            "permessage-deflate;server_no_context_takeover;client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            {"server_no_context_takeover": True, "client_no_context_takeover": True},
        ),
    ],
)
def test_an_acceptable_offer_is_agreed_to(
    offer: str, response: str, agreed: dict[str, bool | int]
) -> None:
    result = negotiate(offer)
    assert result is not None
    params, header = result
    assert header == response
    defaults = PerMessageDeflate()
    for name in ("server_no_context_takeover", "client_no_context_takeover"):
        assert getattr(params, name) is agreed.get(name, getattr(defaults, name))
    assert params.server_max_window_bits == agreed.get("server_max_window_bits", 15)


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11",
        "permessage-deflate; x-unknown",
        "permessage-deflate; mux",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=yes",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=0",
        "permessage-deflate; server_max_window_bits=-10",
        "permessage-deflate; server_max_window_bits=ten",
        "permessage-deflate; server_max_window_bits=010x",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=abc",
        # Header values reach WSGI decoded as latin-1; these are digits to str.isdigit().
        "permessage-deflate; server_max_window_bits=\xb9\xb2",
        "permessage-deflate; client_max_window_bits=\xb9\xb2",
        "x-webkit-deflate-frame",
        "deflate-frame; server_no_context_takeover",
        "",
    ],
)
def test_an_unacceptable_offer_is_declined(offer: str) -> None:
    assert negotiate(offer) is None


def test_the_first_acceptable_of_several_offers_is_taken() -> None:
    header = (
        "permessage-deflate; server_max_window_bits=8, "
        "x-webkit-deflate-frame, "
        "permessage-deflate; server_no_context_takeover, "
        "permessage-deflate"
    )
    result = negotiate(header)
    assert result is not None
    params, response = result
    assert response == "permessage-deflate; server_no_context_takeover"
    assert params.server_no_context_takeover


# -- receiving compressed messages -----------------------------------------------------------


def test_a_compressed_text_message_is_decompressed() -> None:
    conn = compressed_connection()
    text = "a compressed message, " * 50
    events = receive(conn, client_frame(TEXT, deflate(text.encode()), rsv1=True))
    assert events == [TextMessage(text)]


def test_an_uncompressed_message_on_a_compressed_connection_is_read_as_is() -> None:
    conn = compressed_connection()
    assert receive(conn, client_frame(BINARY, b"plain")) == [BinaryMessage(b"plain")]


def test_a_compressed_message_split_across_fragments_is_decompressed() -> None:
    data = os.urandom(2000) + bytes(5000)
    payload = deflate(data)
    third = len(payload) // 3
    conn = compressed_connection()
    events = receive(
        conn,
        client_frame(BINARY, payload[:third], rsv1=True, fin=False),
        client_frame(PING, b"between"),
        client_frame(CONTINUATION, payload[third : 2 * third], fin=False),
        client_frame(CONTINUATION, payload[2 * third :]),
    )
    assert events == [Ping(b"between"), BinaryMessage(data)]


def test_messages_compressed_with_context_takeover_are_decompressed() -> None:
    compressor = zlib.compressobj(wbits=-15)  # one stream for the whole connection
    conn = compressed_connection()
    messages = [b"the same words again and again " * 10 for _ in range(3)] + [b"", b"end"]
    frames = [client_frame(BINARY, deflate(m, compressor), rsv1=True) for m in messages]
    # The later messages refer back into the earlier ones: tiny on the wire.
    assert len(frames[1]) < len(frames[0]) // 2
    assert receive(conn, *frames) == [BinaryMessage(m) for m in messages]


def test_messages_compressed_without_context_takeover_are_decompressed() -> None:
    conn = compressed_connection(client_no_context_takeover=True)
    messages = [b"hello " * 100, b"hello " * 100, b"world"]
    frames = [client_frame(BINARY, deflate(m), rsv1=True) for m in messages]
    assert receive(conn, *frames) == [BinaryMessage(m) for m in messages]


def test_a_message_ending_in_a_bfinal_block_does_not_swallow_the_next_one() -> None:
    # RFC 7692 section 7.2.3.4: a sender may flush with a BFINAL=1 block instead of an
    # empty stored block ("Hello" is then f3 48 cd c9 c9 07 00); its next message is a
    # new deflate stream.
    conn = compressed_connection()
    hello = bytes.fromhex("f348cdc9c90700")
    events = receive(
        conn,
        client_frame(TEXT, hello, rsv1=True),
        client_frame(TEXT, deflate(b"second"), rsv1=True),
        client_frame(TEXT, hello, rsv1=True),
    )
    assert events == [TextMessage("Hello"), TextMessage("second"), TextMessage("Hello")]


def test_a_compressed_message_of_exactly_the_limit_is_accepted() -> None:
    data = os.urandom(64 * 1024)  # incompressible: its deflate form is a little larger
    payload = deflate(data)
    assert len(payload) > len(data)
    conn = compressed_connection(max_message_size=len(data))
    assert receive(conn, client_frame(BINARY, payload, rsv1=True)) == [BinaryMessage(data)]


def test_a_zip_bomb_fails_with_1009_without_inflating_it_all() -> None:
    bomb = deflate(bytes(10 * MiB))  # about 10 KB on the wire
    assert len(bomb) < 20_000
    conn = compressed_connection(max_message_size=MiB)
    frame = client_frame(BINARY, bomb, rsv1=True)
    tracemalloc.start()
    try:
        expect_failure(conn, frame, 1009)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, f"inflating the bomb allocated {peak} bytes"


def test_a_zip_bomb_spread_over_fragments_fails_with_1009() -> None:
    compressor = zlib.compressobj(wbits=-15)
    chunk = bytes(256 * 1024)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    conn = compressed_connection(max_message_size=MiB)
    assert receive(conn, client_frame(BINARY, first, rsv1=True, fin=False)) == []
    for _ in range(2):
        more = compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert receive(conn, client_frame(CONTINUATION, more, fin=False)) == []
    more = compressor.compress(chunk + b"!") + compressor.flush(zlib.Z_SYNC_FLUSH)
    expect_failure(conn, client_frame(CONTINUATION, more, fin=False), 1009)


@pytest.mark.parametrize("length", [1 << 32, 1 << 40, (1 << 63) - 1])
def test_a_compressed_frame_announcing_far_more_than_the_limit_fails_from_its_header(
    length: int,
) -> None:
    # A deflate stream gigabytes long inflates to at most 1 KiB only if it is padding:
    # the server must not buffer it to find out.
    conn = compressed_connection(max_message_size=1024)
    expect_failure(conn, client_header(BINARY, length, rsv1=True), 1009)


def test_corrupt_compressed_data_fails_with_1007() -> None:
    conn = compressed_connection()
    # BFINAL=1, BTYPE=11: a reserved block type.
    expect_failure(conn, client_frame(BINARY, b"\x07\xff\xff\xff", rsv1=True), 1007)


def test_compressed_text_that_is_not_utf8_fails_with_1007() -> None:
    conn = compressed_connection()
    expect_failure(conn, client_frame(TEXT, deflate(b"caf\xe9"), rsv1=True), 1007)


def test_rsv1_on_a_continuation_frame_fails_with_1002() -> None:
    payload = deflate(b"hello world")
    conn = compressed_connection()
    assert receive(conn, client_frame(TEXT, payload[:3], rsv1=True, fin=False)) == []
    expect_failure(conn, client_frame(CONTINUATION, payload[3:], rsv1=True), 1002)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_rsv1_on_a_control_frame_fails_with_1002(opcode: int) -> None:
    payload = close_payload(1000) if opcode == CLOSE else b""
    expect_failure(compressed_connection(), client_frame(opcode, payload, rsv1=True), 1002)


# -- sending compressed messages -------------------------------------------------------------


def test_server_frames_of_a_compressed_connection_have_rsv1_and_decompress_to_the_message() -> None:
    conn = compressed_connection()
    decompressor = zlib.decompressobj(wbits=-15)  # context taken over, as agreed by default
    messages = ["hello " * 200, "hello " * 200, "", "ünïcödé"]
    for text in messages:
        conn.send_text(text)
        [frame] = parse_frames(conn.data_to_send())
        assert frame.rsv1 and frame.fin and not frame.masked and frame.opcode == TEXT
        assert not frame.payload.endswith(TAIL)
        assert inflate(frame.payload, decompressor).decode() == text
    conn.send_binary(bytes(range(256)) * 4)
    [frame] = parse_frames(conn.data_to_send())
    assert frame.rsv1 and frame.opcode == BINARY
    assert inflate(frame.payload, decompressor) == bytes(range(256)) * 4


def test_server_no_context_takeover_makes_each_message_decompress_on_its_own() -> None:
    conn = compressed_connection(server_no_context_takeover=True)
    for _ in range(3):
        conn.send_binary(b"repeat me " * 100)
        [frame] = parse_frames(conn.data_to_send())
        assert inflate(frame.payload) == b"repeat me " * 100  # a fresh decompressor each time


def test_server_max_window_bits_is_honoured() -> None:
    conn = compressed_connection(server_max_window_bits=9)
    decompressor = zlib.decompressobj(wbits=-9)  # the client inflates with the agreed window
    data = os.urandom(300) * 10 + b"tail" * 500
    conn.send_binary(data)
    [frame] = parse_frames(conn.data_to_send())
    assert inflate(frame.payload, decompressor) == data


def test_control_frames_of_a_compressed_connection_are_not_compressed() -> None:
    conn = compressed_connection()
    receive(conn, client_frame(PING, b"ping"))
    conn.send_ping(b"mine")
    conn.send_close(1000, "done")
    frames = parse_frames(conn.data_to_send())
    assert [(f.opcode, f.rsv1) for f in frames] == [(PONG, False), (PING, False), (CLOSE, False)]
    assert frames[0].payload == b"ping" and frames[2].close_code == 1000


def test_compress_and_decompress_round_trip() -> None:
    for params in ({}, {"server_no_context_takeover": True}):
        server = PerMessageDeflate(**params)  # type: ignore[arg-type]
        client = PerMessageDeflate(client_no_context_takeover=bool(params))
        for data in (b"", b"x", os.urandom(1000), b"abc" * 10_000):
            assert client.decompress(server.compress(data), len(data), final=True) == data


def test_a_prepared_message_is_compressed_by_each_compressing_connection() -> None:
    message = PreparedText("presence " * 50)
    conn = compressed_connection()
    conn.send_prepared(message)
    [frame] = parse_frames(conn.data_to_send())
    assert frame.rsv1 and frame.opcode == TEXT
    assert inflate(frame.payload) == message.text.encode()
    assert len(frame.payload) < len(message.frame)  # not the shared uncompressed frame
