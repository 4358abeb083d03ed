"""Properties of the frame codec and parser, for any input hypothesis can think of.

Masking (both codecs) equals RFC 6455 section 5.3 byte by byte for any data,
mask and alignment. The parser, fed anything in any chunking, either produces
events or fails with :class:`ProtocolError` and a queued close frame: never
another exception, never a hang, never a message over the limit.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ext import _frames_py
from project.websocket.deflate import PerMessageDeflate
from project.websocket.protocol import (
    BinaryMessage,
    Close,
    Connection,
    Event,
    Ping,
    Pong,
    ProtocolError,
    State,
    TextMessage,
)
from tests.ext.conftest import COMPILED, ApplyMask, reference
from tests.project.websocket.test_protocol import (
    BINARY,
    CLOSE,
    CONTINUATION,
    TEXT,
    client_frame,
    client_header,
    parse_frames,
)

LIMIT = 4096

SETTINGS = settings(
    max_examples=150,
    deadline=2000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- masking ---------------------------------------------------------------------------------

masks = st.binary(min_size=4, max_size=4)
payloads = st.binary(max_size=4096)


@SETTINGS
@given(data=payloads, mask=masks, offset=st.integers(0, 15), trailing=st.integers(0, 7))
def test_masking_matches_the_reference_for_any_data_mask_and_alignment(
    apply_mask: ApplyMask,
    data: bytes,
    mask: bytes,
    offset: int,
    trailing: int,
) -> None:
    buffer = bytearray(b"\xaa" * offset + data + b"\x55" * trailing)
    view = memoryview(buffer)[offset : offset + len(data)]
    result = apply_mask(view, mask)
    assert type(result) is bytes
    assert result == reference(data, mask)
    assert bytes(buffer) == b"\xaa" * offset + data + b"\x55" * trailing  # input untouched


@SETTINGS
@given(data=payloads, mask=masks)
def test_masking_twice_restores_the_data(apply_mask: ApplyMask, data: bytes, mask: bytes) -> None:
    assert apply_mask(apply_mask(data, mask), mask) == data


@pytest.mark.skipif(not COMPILED, reason="ext._frames is not built")
@SETTINGS
@given(data=payloads, mask=masks, offset=st.integers(0, 7))
def test_both_codecs_agree(data: bytes, mask: bytes, offset: int) -> None:
    from ext import _frames

    view = memoryview(b"\x00" * offset + data)[offset:]
    assert _frames.apply_mask(view, mask) == _frames_py.apply_mask(view, mask)


# -- the parser ------------------------------------------------------------------------------


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """*data* cut at arbitrary points (possibly into single bytes)."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=12)))
    bounds = [0, *(c for c in cuts if c < len(data)), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A client frame, mostly well-formed, sometimes wrong in one way or another."""
    opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10]) | st.integers(0, 15))
    payload = draw(
        st.binary(max_size=300)
        | st.text(max_size=80).map(str.encode)
        | st.integers(1000, 4999).map(lambda code: struct.pack("!H", code))
    )
    kind = draw(st.sampled_from(["ok"] * 6 + ["unmasked", "rsv", "form", "lie"]))
    fin = draw(st.booleans())
    if kind == "unmasked":
        return client_frame(opcode, payload, fin=fin, mask=None)
    if kind == "rsv":
        return client_frame(opcode, payload, fin=fin, rsv1=True, rsv3=draw(st.booleans()))
    if kind == "form":  # a longer length encoding than needed
        return client_frame(opcode, payload, fin=fin, form=draw(st.sampled_from([16, 64])))
    mask = draw(masks)
    if kind == "lie":  # a header announcing any length, followed by whatever payload
        length = draw(st.integers(0, 2**64 - 1))
        return client_header(opcode, length, fin=fin, mask=mask) + payload
    return client_frame(opcode, payload, fin=fin, mask=mask)


def consume(conn: Connection, chunks: list[bytes]) -> list[Event]:
    """Feed every chunk; the parser may only produce events or fail with ProtocolError."""
    events: list[Event] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        try:
            for event in conn.events():
                assert isinstance(event, TextMessage | BinaryMessage | Ping | Pong | Close)
                events.append(event)
        except ProtocolError as exc:
            assert exc.code in (1002, 1007, 1009)
            assert conn.state is State.CLOSED
            sent = parse_frames(conn.data_to_send())
            assert sent and sent[-1].opcode == CLOSE
            assert sent[-1].close_code == exc.code
            assert list(conn.events()) == []
            break
    for event in events:
        if isinstance(event, TextMessage):
            assert len(event.data.encode()) <= LIMIT
        elif isinstance(event, BinaryMessage):
            assert len(event.data) <= LIMIT
    return events


@SETTINGS
@given(st.binary(max_size=2048).flatmap(chunked))
def test_arbitrary_bytes_yield_events_or_a_protocol_error(chunks: list[bytes]) -> None:
    consume(Connection(max_message_size=LIMIT), chunks)


@SETTINGS
@given(st.lists(frames(), max_size=8).map(b"".join).flatmap(chunked))
def test_arbitrary_frames_yield_events_or_a_protocol_error(chunks: list[bytes]) -> None:
    consume(Connection(max_message_size=LIMIT), chunks)


@SETTINGS
@given(st.lists(frames(), max_size=8).map(b"".join).flatmap(chunked))
def test_arbitrary_frames_on_a_compressed_connection_yield_events_or_a_protocol_error(
    chunks: list[bytes],
) -> None:
    consume(Connection(max_message_size=LIMIT, deflate=PerMessageDeflate()), chunks)


@st.composite
def fragmented_messages(draw: st.DrawFn) -> tuple[Event, bytes]:
    """A valid text or binary message under the limit, fragmented anyhow, as bytes on the wire."""
    if draw(st.booleans()):
        text = draw(st.text(max_size=300))
        expected: Event = TextMessage(text)
        data = text.encode()
        opcode = TEXT
    else:
        data = draw(st.binary(max_size=LIMIT))
        expected = BinaryMessage(data)
        opcode = BINARY
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    bounds = [0, *cuts, len(data)]
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    wire = b""
    for i, piece in enumerate(pieces):
        wire += client_frame(
            opcode if i == 0 else CONTINUATION,
            piece,
            fin=i == len(pieces) - 1,
            mask=draw(masks),
        )
        if draw(st.integers(0, 4)) == 0:
            wire += client_frame(0x9, draw(st.binary(max_size=125)), mask=draw(masks))
    return expected, wire


@SETTINGS
@given(st.lists(fragmented_messages(), min_size=1, max_size=4), st.data())
def test_valid_messages_in_any_fragmentation_and_chunking_arrive_intact(
    messages: list[tuple[Event, bytes]], data: st.DataObject
) -> None:
    wire = b"".join(w for _, w in messages)
    chunks = data.draw(chunked(wire))
    conn = Connection(max_message_size=LIMIT)
    events = [e for e in consume(conn, chunks) if not isinstance(e, Ping)]
    assert events == [expected for expected, _ in messages]
    assert conn.state is State.OPEN


@SETTINGS
@given(
    prefix=st.integers(0, LIMIT),
    excess=st.integers(1, 2**63 - 1 - LIMIT),
    opcode=st.sampled_from([TEXT, BINARY]),
    mask=masks,
)
def test_a_header_announcing_more_than_the_limit_fails_with_1009_at_once(
    prefix: int, excess: int, opcode: int, mask: bytes
) -> None:
    """Nothing past the header is needed, so nothing of the oversized payload is buffered."""
    conn = Connection(max_message_size=LIMIT)
    first = client_frame(opcode, b"a" * prefix, fin=False, mask=mask)
    header = client_header(CONTINUATION, LIMIT - prefix + excess, fin=False, mask=mask)
    conn.receive_data(first + header)
    with pytest.raises(ProtocolError) as info:
        list(conn.events())
    assert info.value.code == 1009
    assert parse_frames(conn.data_to_send())[-1].close_code == 1009
