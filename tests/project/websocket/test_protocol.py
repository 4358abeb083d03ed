"""The sans-I/O RFC 6455 protocol core: a client's frames in, the server's frames and events out.

Client frames are built here by hand, bit by bit, so every way a peer can break
the protocol can be sent; the server's output is parsed back into frames so
each failure is checked by the close code a real client would receive.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from project.websocket.exceptions import ProtocolError
from project.websocket.protocol import (
    BinaryMessage,
    Close,
    Connection,
    Event,
    Ping,
    Pong,
    PreparedText,
    State,
    TextMessage,
)

MASK = b"\x37\xfa\x21\x3d"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# -- helpers -----------------------------------------------------------------------------------


def client_header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    mask: bytes | None = MASK,
    form: int | None = None,
) -> bytes:
    """A frame header as a client writes it (section 5.2).

    *form* forces the length encoding (7, 16 or 64 bits); by default the minimal one.
    *mask* None leaves the MASK bit clear and writes no masking key.
    """
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0)
    first |= (0x10 if rsv3 else 0) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if form is None:
        form = 7 if length < 126 else 16 if length < 1 << 16 else 64
    if form == 7:
        header = struct.pack("!BB", first, mask_bit | length)
    elif form == 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    return header + (mask or b"")


def mask_bytes(payload: bytes, mask: bytes) -> bytes:
    """RFC 6455 section 5.3, byte by byte."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    mask: bytes | None = MASK,
    form: int | None = None,
) -> bytes:
    """A whole client frame: header, masking key, and the payload masked with it."""
    header = client_header(
        opcode, len(payload), fin=fin, rsv1=rsv1, rsv2=rsv2, rsv3=rsv3, mask=mask, form=form
    )
    return header + (mask_bytes(payload, mask) if mask is not None else payload)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclass(frozen=True)
class ServerFrame:
    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool
    opcode: int
    masked: bool
    form: int  # how the length was encoded: 7, 16 or 64 bits
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if self.payload else None

    @property
    def close_reason(self) -> bytes:
        assert self.opcode == CLOSE
        return self.payload[2:]


def parse_frames(data: bytes) -> list[ServerFrame]:
    """Split what the server wrote into frames; fails on a truncated frame."""
    frames = []
    offset = 0
    while offset < len(data):
        first, second = data[offset], data[offset + 1]
        length, offset, form = second & 0x7F, offset + 2, 7
        if length == 126:
            (length,), offset, form = struct.unpack_from("!H", data, offset), offset + 2, 16
        elif length == 127:
            (length,), offset, form = struct.unpack_from("!Q", data, offset), offset + 8, 64
        mask = None
        if second & 0x80:
            mask, offset = data[offset : offset + 4], offset + 4
        payload = data[offset : offset + length]
        assert len(payload) == length, "the server wrote a truncated frame"
        offset += length
        frames.append(
            ServerFrame(
                fin=bool(first & 0x80),
                rsv1=bool(first & 0x40),
                rsv2=bool(first & 0x20),
                rsv3=bool(first & 0x10),
                opcode=first & 0x0F,
                masked=mask is not None,
                form=form,
                payload=mask_bytes(payload, mask) if mask is not None else payload,
            )
        )
    return frames


def receive(conn: Connection, *chunks: bytes) -> list[Event]:
    """Feed each chunk and collect the events it completes."""
    events: list[Event] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        events.extend(conn.events())
    return events


def expect_failure(conn: Connection, data: bytes, code: int) -> list[Event]:
    """Feed *data*; the server must fail with *code* and queue a close frame carrying it.

    Returns the events delivered before the failure.
    """
    conn.receive_data(data)
    delivered: list[Event] = []
    with pytest.raises(ProtocolError) as info:
        for event in conn.events():
            delivered.append(event)
    assert info.value.code == code
    frames = parse_frames(conn.data_to_send())
    closes = [f for f in frames if f.opcode == CLOSE]
    assert len(closes) == 1 and frames[-1] is closes[0], "exactly one close frame, sent last"
    assert closes[0].close_code == code
    assert conn.state is State.CLOSED
    assert list(conn.events()) == []  # a failed connection parses nothing more
    return delivered


# -- frames a server must refuse (1002) ------------------------------------------------------


def test_an_unmasked_client_frame_fails_with_1002() -> None:
    expect_failure(Connection(), client_frame(TEXT, b"hello", mask=None), 1002)


def test_an_unmasked_frame_is_refused_from_its_first_two_bytes() -> None:
    expect_failure(Connection(), client_header(BINARY, 1000, mask=None)[:2], 1002)


@pytest.mark.parametrize("bit", ["rsv1", "rsv2", "rsv3"])
def test_a_reserved_bit_without_a_negotiated_extension_fails_with_1002(bit: str) -> None:
    expect_failure(Connection(), client_frame(TEXT, b"hi", **{bit: True}), 1002)


@pytest.mark.parametrize("bit", ["rsv1", "rsv2", "rsv3"])
def test_a_reserved_bit_on_a_control_frame_fails_with_1002(bit: str) -> None:
    expect_failure(Connection(), client_frame(PING, b"hi", **{bit: True}), 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_a_reserved_opcode_fails_with_1002(opcode: int) -> None:
    expect_failure(Connection(), client_frame(opcode, b"x"), 1002)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_a_control_frame_announcing_126_bytes_fails_with_1002_before_its_payload(
    opcode: int,
) -> None:
    expect_failure(Connection(), client_header(opcode, 126), 1002)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_a_fragmented_control_frame_fails_with_1002(opcode: int) -> None:
    expect_failure(Connection(), client_frame(opcode, b"", fin=False), 1002)


def test_a_continuation_without_a_started_message_fails_with_1002() -> None:
    expect_failure(Connection(), client_frame(CONTINUATION, b"orphan"), 1002)


def test_a_continuation_after_a_finished_message_fails_with_1002() -> None:
    conn = Connection()
    assert receive(conn, client_frame(TEXT, b"done")) == [TextMessage("done")]
    expect_failure(conn, client_frame(CONTINUATION, b"more"), 1002)


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_a_new_data_frame_during_a_fragmented_message_fails_with_1002(opcode: int) -> None:
    conn = Connection()
    assert receive(conn, client_frame(TEXT, b"first half", fin=False)) == []
    expect_failure(conn, client_frame(opcode, b"interloper"), 1002)


def test_a_64_bit_length_with_the_top_bit_set_fails_with_1002_from_the_header_alone() -> None:
    header = client_header(BINARY, 1 << 63, form=64)
    expect_failure(Connection(max_message_size=1 << 62), header, 1002)


def test_frames_before_a_violation_are_still_delivered() -> None:
    conn = Connection()
    data = client_frame(TEXT, b"fine") + client_frame(TEXT, b"unmasked", mask=None)
    assert expect_failure(conn, data, 1002) == [TextMessage("fine")]


# -- UTF-8 (1007) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff",
        b"caf\xc3",  # a character cut off at the end of the message
        b"\xc0\xaf",  # overlong encoding of "/"
        b"\xed\xa0\x80",  # a UTF-16 surrogate
        b"\xf4\x90\x80\x80",  # past U+10FFFF
        "κόσμε".encode() + b"\xce",
    ],
    ids=["invalid-byte", "truncated", "overlong", "surrogate", "too-high", "cut-after-text"],
)
def test_invalid_utf8_in_a_text_message_fails_with_1007(payload: bytes) -> None:
    expect_failure(Connection(), client_frame(TEXT, payload), 1007)


def test_invalid_utf8_in_the_first_fragment_fails_before_the_message_ends() -> None:
    conn = Connection()
    expect_failure(conn, client_frame(TEXT, b"ok \xff so far", fin=False), 1007)


def test_invalid_utf8_across_fragments_fails_on_the_fragment_that_makes_it_invalid() -> None:
    conn = Connection()
    assert receive(conn, client_frame(TEXT, "κόσμε".encode() + b"\xf4", fin=False)) == []
    expect_failure(conn, client_frame(CONTINUATION, b"\x90", fin=False), 1007)


def test_invalid_utf8_in_a_middle_fragment_fails_before_the_final_one() -> None:
    conn = Connection()
    assert receive(conn, client_frame(TEXT, b"hello ", fin=False)) == []
    expect_failure(conn, client_frame(CONTINUATION, b"\x80", fin=False), 1007)


@pytest.mark.parametrize("text", ["é", "€", "𝄞", "a€b𝄞c"])
def test_utf8_split_inside_a_character_across_fragments_is_accepted(text: str) -> None:
    data = text.encode()
    for cut in range(1, len(data)):
        conn = Connection()
        events = receive(
            conn,
            client_frame(TEXT, data[:cut], fin=False),
            client_frame(CONTINUATION, data[cut:]),
        )
        assert events == [TextMessage(text)], f"cut at byte {cut}"
        assert conn.data_to_send() == b""


def test_utf8_split_into_one_byte_fragments_is_accepted() -> None:
    data = "añ€𝄞".encode()
    frames = [client_frame(TEXT, data[:1], fin=False)]
    frames += [client_frame(CONTINUATION, data[i : i + 1], fin=False) for i in range(1, len(data))]
    frames.append(client_frame(CONTINUATION, b""))
    assert receive(Connection(), *frames) == [TextMessage("añ€𝄞")]


def test_binary_messages_are_not_checked_for_utf8() -> None:
    assert receive(Connection(), client_frame(BINARY, b"\xff\xfe")) == [BinaryMessage(b"\xff\xfe")]


# -- size limit (1009) -----------------------------------------------------------------------


@pytest.mark.parametrize("form", [16, 64])
def test_a_frame_announcing_more_than_the_limit_fails_with_1009_from_the_header_alone(
    form: int,
) -> None:
    length = 60_000 if form == 16 else 1 << 40
    expect_failure(
        Connection(max_message_size=1024), client_header(BINARY, length, form=form), 1009
    )


def test_a_message_of_exactly_the_limit_is_accepted() -> None:
    conn = Connection(max_message_size=1024)
    assert receive(conn, client_frame(BINARY, b"x" * 1024)) == [BinaryMessage(b"x" * 1024)]


def test_a_fragmented_message_whose_sum_exceeds_the_limit_fails_with_1009() -> None:
    conn = Connection(max_message_size=1000)
    assert receive(conn, client_frame(TEXT, b"a" * 600, fin=False)) == []
    assert receive(conn, client_frame(CONTINUATION, b"b" * 300, fin=False)) == []
    expect_failure(conn, client_header(CONTINUATION, 101, fin=False), 1009)


def test_the_limit_applies_per_message_not_per_connection() -> None:
    conn = Connection(max_message_size=100)
    frames = [client_frame(BINARY, bytes(100)) for _ in range(5)]
    assert receive(conn, *frames) == [BinaryMessage(bytes(100))] * 5


def test_control_frames_inside_a_message_do_not_count_toward_its_size() -> None:
    conn = Connection(max_message_size=100)
    events = receive(
        conn,
        client_frame(BINARY, bytes(60), fin=False),
        client_frame(PING, bytes(125)),
        client_frame(CONTINUATION, bytes(40)),
    )
    assert events == [Ping(bytes(125)), BinaryMessage(bytes(100))]


# -- the closing handshake -------------------------------------------------------------------


def test_a_close_frame_with_a_1_byte_payload_fails_with_1002() -> None:
    expect_failure(Connection(), client_frame(CLOSE, b"\x03"), 1002)


@pytest.mark.parametrize(
    "code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
)
def test_a_close_frame_with_an_invalid_code_fails_with_1002(code: int) -> None:
    expect_failure(Connection(), client_frame(CLOSE, close_payload(code)), 1002)


@pytest.mark.parametrize(
    "code",
    [
        1000,
        1001,
        1002,
        1003,
        1007,
        1008,
        1009,
        1010,
        1011,
        1012,
        1013,
        1014,
        3000,
        3999,
        4000,
        4999,
    ],
)
def test_a_close_frame_with_a_valid_code_is_echoed_with_that_code(code: int) -> None:
    conn = Connection()
    events = receive(conn, client_frame(CLOSE, close_payload(code, b"bye")))
    assert events == [Close(code, "bye")]
    [echo] = parse_frames(conn.data_to_send())
    assert echo.opcode == CLOSE and echo.fin and not echo.masked
    assert echo.close_code == code
    assert conn.state is State.CLOSED


def test_a_close_reason_that_is_not_utf8_fails_with_1007() -> None:
    expect_failure(Connection(), client_frame(CLOSE, close_payload(1000, b"bad \xff")), 1007)


def test_an_empty_close_frame_is_echoed_as_an_empty_close() -> None:
    conn = Connection()
    assert receive(conn, client_frame(CLOSE)) == [Close(1005, "")]
    [echo] = parse_frames(conn.data_to_send())
    assert echo.opcode == CLOSE and echo.payload == b""
    assert conn.state is State.CLOSED


def test_a_close_with_the_longest_reason_is_echoed_whole() -> None:
    reason = "ü" * 61 + "x"  # 123 bytes: the most a close frame holds after its code
    conn = Connection()
    assert receive(conn, client_frame(CLOSE, close_payload(1001, reason.encode()))) == [
        Close(1001, reason)
    ]
    [echo] = parse_frames(conn.data_to_send())
    assert echo.close_code == 1001 and echo.close_reason.decode() == reason


def test_a_close_started_by_the_server_completes_when_the_client_echoes_it() -> None:
    conn = Connection()
    conn.send_close(1001, "going away")
    [frame] = parse_frames(conn.data_to_send())
    assert frame.opcode == CLOSE and frame.close_code == 1001
    assert frame.close_reason == b"going away"
    assert conn.state is State.CLOSING
    assert receive(conn, client_frame(CLOSE, close_payload(1001))) == [Close(1001, "")]
    assert conn.state is State.CLOSED
    assert conn.data_to_send() == b"", "the server's close is not sent twice"


def test_a_long_close_reason_is_cut_to_valid_utf8_within_125_bytes() -> None:
    conn = Connection()
    conn.send_close(1000, "é" * 100)  # 200 bytes of two-byte characters
    [frame] = parse_frames(conn.data_to_send())
    assert len(frame.payload) <= 125
    assert frame.close_code == 1000
    reason = frame.close_reason.decode("utf-8")  # a peer fails the connection (1007) otherwise
    assert reason and set(reason) == {"é"}


def test_nothing_can_be_sent_after_the_server_closed() -> None:
    conn = Connection()
    conn.send_close()
    conn.data_to_send()
    with pytest.raises(RuntimeError):
        conn.send_text("late")
    with pytest.raises(RuntimeError):
        conn.send_binary(b"late")
    conn.send_close()  # a second close is a no-op
    conn.send_ping(b"late")
    assert conn.data_to_send() == b""


def test_nothing_can_be_sent_after_the_client_closed() -> None:
    conn = Connection()
    receive(conn, client_frame(CLOSE, close_payload(1000)))
    conn.data_to_send()
    with pytest.raises(RuntimeError):
        conn.send_text("late")
    with pytest.raises(RuntimeError):
        conn.send_binary(b"late")
    assert conn.data_to_send() == b""


def test_nothing_can_be_sent_after_a_protocol_error() -> None:
    conn = Connection()
    expect_failure(conn, client_frame(TEXT, b"x", mask=None), 1002)
    with pytest.raises(RuntimeError):
        conn.send_text("late")


def test_events_stop_after_the_close_frame() -> None:
    conn = Connection()
    data = client_frame(CLOSE, close_payload(1000)) + client_frame(TEXT, b"after the close")
    assert receive(conn, data) == [Close(1000, "")]
    assert receive(conn, client_frame(PING, b"still there?")) == []
    [echo] = parse_frames(conn.data_to_send())
    assert echo.opcode == CLOSE, "no pong after the close"


# -- ping and pong ---------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125))], ids=["empty", "5", "125"])
def test_a_ping_is_answered_by_a_pong_with_the_same_payload(payload: bytes) -> None:
    conn = Connection()
    assert receive(conn, client_frame(PING, payload)) == [Ping(payload)]
    [pong] = parse_frames(conn.data_to_send())
    assert pong.opcode == PONG and pong.fin and not pong.masked
    assert pong.payload == payload


def test_pings_inside_a_fragmented_message_are_answered_and_the_message_assembles() -> None:
    conn = Connection()
    events = receive(
        conn,
        client_frame(TEXT, b"Hello, ", fin=False),
        client_frame(PING, b"one"),
        client_frame(CONTINUATION, b"fragmented ", fin=False),
        client_frame(PING, b"two"),
        client_frame(PONG, b"three"),
        client_frame(CONTINUATION, b"world"),
    )
    assert events == [
        Ping(b"one"),
        Ping(b"two"),
        Pong(b"three"),
        TextMessage("Hello, fragmented world"),
    ]
    pongs = parse_frames(conn.data_to_send())
    assert [(f.opcode, f.payload) for f in pongs] == [(PONG, b"one"), (PONG, b"two")]


def test_a_pong_produces_a_pong_event_and_no_reply() -> None:
    conn = Connection()
    assert receive(conn, client_frame(PONG, b"unsolicited")) == [Pong(b"unsolicited")]
    assert conn.data_to_send() == b""


def test_the_server_sends_unmasked_pings() -> None:
    conn = Connection()
    conn.send_ping(b"are you there")
    [ping] = parse_frames(conn.data_to_send())
    assert (ping.opcode, ping.payload, ping.masked, ping.fin) == (
        PING,
        b"are you there",
        False,
        True,
    )
    with pytest.raises(ValueError):
        conn.send_ping(bytes(126))


# -- framing: lengths, chunking, round trips -------------------------------------------------


@pytest.mark.parametrize(
    ("size", "form"), [(0, 7), (125, 7), (126, 16), (65535, 16), (65536, 64), (70000, 64)]
)
def test_client_frames_in_each_length_form_are_read(size: int, form: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    conn = Connection()
    data = client_frame(BINARY, payload, form=form)
    assert receive(conn, data) == [BinaryMessage(payload)]


@pytest.mark.parametrize(("size", "form"), [(0, 7), (125, 7), (126, 16), (65535, 16), (65536, 64)])
def test_server_frames_are_unmasked_and_use_the_minimal_length_form(size: int, form: int) -> None:
    payload = bytes(i % 256 for i in range(size))
    conn = Connection()
    conn.send_binary(payload)
    [frame] = parse_frames(conn.data_to_send())
    assert not frame.masked
    assert frame.form == form
    assert (frame.fin, frame.rsv1, frame.rsv2, frame.rsv3) == (True, False, False, False)
    assert frame.opcode == BINARY and frame.payload == payload


def test_a_text_message_sent_by_the_server_is_one_utf8_text_frame() -> None:
    conn = Connection()
    conn.send_text("héllo wörld €")
    [frame] = parse_frames(conn.data_to_send())
    assert frame.opcode == TEXT and frame.fin and not frame.masked
    assert frame.payload.decode("utf-8") == "héllo wörld €"


def test_a_prepared_message_sends_the_same_frame_as_send_text() -> None:
    message = PreparedText("héllo €" * 100)
    first, second, plain = Connection(), Connection(), Connection()
    first.send_prepared(message)
    second.send_prepared(message)
    plain.send_text(message.text)
    sent = first.data_to_send()
    assert sent == second.data_to_send() == plain.data_to_send()
    assert message.frame is message.frame  # encoded once, shared
    [frame] = parse_frames(sent)
    assert frame.opcode == TEXT and frame.payload.decode("utf-8") == message.text


def test_a_prepared_message_cannot_be_sent_after_a_close() -> None:
    conn = Connection()
    conn.send_close()
    with pytest.raises(RuntimeError):
        conn.send_prepared(PreparedText("late"))


def test_binary_messages_round_trip() -> None:
    payload = bytes(range(256)) * 3
    conn = Connection()
    assert receive(conn, client_frame(BINARY, payload)) == [BinaryMessage(payload)]
    conn.send_binary(payload)
    [frame] = parse_frames(conn.data_to_send())
    assert frame.opcode == BINARY and frame.payload == payload


def test_a_fragmented_binary_message_assembles() -> None:
    conn = Connection()
    events = receive(
        conn,
        client_frame(BINARY, b"\x00\x01", fin=False),
        client_frame(CONTINUATION, b"", fin=False),
        client_frame(CONTINUATION, b"\x02\x03"),
    )
    assert events == [BinaryMessage(b"\x00\x01\x02\x03")]


def _one_byte_at_a_time(data: bytes) -> Iterable[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


def test_frames_arriving_byte_by_byte_assemble_correctly() -> None:
    data = (
        client_frame(TEXT, "ünïcödé ".encode(), fin=False)
        + client_frame(PING, b"p")
        + client_frame(CONTINUATION, b"text")
        + client_frame(BINARY, bytes(300))
        + client_frame(BINARY, bytes(70000))
    )
    conn = Connection()
    events: list[Event] = []
    for byte in _one_byte_at_a_time(data):
        events += receive(conn, byte)
    assert events == [
        Ping(b"p"),
        TextMessage("ünïcödé text"),
        BinaryMessage(bytes(300)),
        BinaryMessage(bytes(70000)),
    ]


def test_no_event_is_produced_until_a_frame_is_complete() -> None:
    conn = Connection()
    frame = client_frame(TEXT, b"hello")
    assert receive(conn, frame[:-1]) == []
    assert receive(conn, frame[-1:]) == [TextMessage("hello")]


def test_several_frames_in_one_read_all_produce_events() -> None:
    conn = Connection()
    data = b"".join(client_frame(TEXT, f"message {i}".encode()) for i in range(10))
    assert receive(conn, data) == [TextMessage(f"message {i}") for i in range(10)]


def test_every_masking_key_unmasks_the_payload() -> None:
    for mask in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04", MASK):
        conn = Connection()
        assert receive(conn, client_frame(TEXT, b"masked text", mask=mask)) == [
            TextMessage("masked text")
        ]
