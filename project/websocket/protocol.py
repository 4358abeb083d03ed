"""RFC 6455 WebSocket protocol, server side, sans I/O: bytes in, events out; events in, bytes out.

Nothing here touches a socket. The server layer (:mod:`project.websocket.server`)
feeds received bytes to :meth:`Connection.receive_data`, handles the events
from :meth:`Connection.events`, and writes :meth:`Connection.data_to_send` to
the wire. That is what lets one protocol core run under werkzeug, gunicorn's
threads and gevent, and be fuzzed.

A frame on the wire (section 5.2)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    |     Extended payload length continued, if payload len == 127  |
    + - - - - - - - - - - - - - - - +-------------------------------+
    |                               |Masking-key, if MASK set to 1  |
    +-------------------------------+-------------------------------+
    | Masking-key (continued)       |          Payload Data         |
    +-------------------------------- - - - - - - - - - - - - - - - +

The seed tutorial read the length as ``payload_len == 126`` for the 16-bit
form but then took the mask from the wrong offset for 127; here each form is
parsed by its own branch, and a 64-bit length with its top bit set is a
protocol error, as the RFC says.

Errors: a violation raises :class:`ProtocolError` from :meth:`Connection.events`
after queueing the close frame with its code (1002 protocol error, 1007 bad
UTF-8, 1009 too big); the server sends it and closes the TCP connection.
"""

from __future__ import annotations

import codecs
import enum
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from ext.frames import apply_mask
from project.websocket.deflate import PerMessageDeflate, deflate_bound
from project.websocket.exceptions import DecompressionTooLarge, ProtocolError


class Opcode(enum.IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


CONTROL_OPCODES = {Opcode.CLOSE, Opcode.PING, Opcode.PONG}


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent: stands for "the close frame had no code"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


def valid_close_code(code: int) -> bool:
    """Codes a peer may send (section 7.4): the defined ones, and 3000-4999 for apps."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # we sent a close frame and wait for the peer's
    CLOSED = "closed"  # both close frames exchanged, or the connection failed


@dataclass(frozen=True)
class TextMessage:
    data: str


@dataclass(frozen=True)
class BinaryMessage:
    data: bytes


@dataclass(frozen=True)
class Ping:
    payload: bytes


@dataclass(frozen=True)
class Pong:
    payload: bytes


@dataclass(frozen=True)
class Close:
    """The peer closed; the echo is already queued when this is seen."""

    code: int
    reason: str


Event = TextMessage | BinaryMessage | Ping | Pong | Close


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A server frame: never masked (section 5.1)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


class PreparedText:
    """A text message to send to many connections, its frame encoded once for all of them.

    A room's broadcast reaches thousands of sockets; those without compression
    all send the same bytes, so the frame is built on first use and shared
    (a compressing connection has its own deflate state and encodes its own).
    """

    __slots__ = ("_frame", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        """The uncompressed text frame (a race may build it twice; both are equal)."""
        if self._frame is None:
            self._frame = encode_frame(Opcode.TEXT, self.text.encode("utf-8"))
        return self._frame


MIN_AVERAGE_FRAGMENT = 64  # bytes: a message may have max_message_size / 64 fragments...
MIN_FRAGMENTS = 1024  # ...and at least this many


class Connection:
    """One server-side WebSocket connection's protocol state.

    Args:
        max_message_size: bytes a message may have (after decompression); more fails with 1009.
        deflate: the negotiated permessage-deflate parameters, or None.
    """

    def __init__(
        self, max_message_size: int = 1 << 20, deflate: PerMessageDeflate | None = None
    ) -> None:
        self.max_message_size = max_message_size
        self.deflate = deflate
        self.state = State.OPEN
        self.close_code: int | None = None
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []
        self._message_opcode: int | None = None  # TEXT or BINARY while a message is in progress
        self._message_compressed = False
        # A fragmented message is reassembled in one buffer (its size is its payload's),
        # and may have at most max_fragments fragments: empty or 1-byte fragments would
        # otherwise cost a parse each (and, kept apart, an object each) for no payload.
        self.max_fragments = max(MIN_FRAGMENTS, max_message_size // MIN_AVERAGE_FRAGMENT)
        self._message = bytearray()
        self._fragment_count = 0
        self._message_size = 0
        self._wire_size = 0  # the current message's bytes as received, before inflating
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")

    # -- sending -----------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        self._send_message(Opcode.TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> None:
        self._send_message(Opcode.BINARY, bytes(data))

    def send_prepared(self, message: PreparedText) -> None:
        """Send a text message whose frame may be shared with other connections."""
        if self.deflate is not None:
            self.send_text(message.text)
        elif self.state is not State.OPEN:
            raise RuntimeError(f"cannot send a message on a {self.state.value} connection")
        else:
            self._outgoing.append(message.frame)

    def _send_message(self, opcode: Opcode, payload: bytes) -> None:
        if self.state is not State.OPEN:
            raise RuntimeError(f"cannot send a message on a {self.state.value} connection")
        if self.deflate is not None:
            self._outgoing.append(encode_frame(opcode, self.deflate.compress(payload), rsv1=True))
        else:
            self._outgoing.append(encode_frame(opcode, payload))

    def send_ping(self, payload: bytes = b"") -> None:
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        if self.state is State.OPEN:
            self._outgoing.append(encode_frame(Opcode.PING, payload))

    def send_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (or finish it, when echoing)."""
        if self.state is not State.OPEN:
            return
        payload = b"" if code == CloseCode.NO_STATUS else struct.pack("!H", code)
        # Cut long reasons to the 125-byte frame without splitting a character.
        cut = reason.encode("utf-8")[: 125 - len(payload)]
        payload += cut.decode("utf-8", "ignore").encode("utf-8")
        self._outgoing.append(encode_frame(Opcode.CLOSE, payload))
        self.close_code = code
        self.state = State.CLOSING

    def data_to_send(self) -> bytes:
        """Everything queued for the wire since the last call."""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def events(self) -> Iterator[Event]:
        """Parse every complete frame received so far.

        Raises:
            ProtocolError: the peer broke the protocol; the close frame is queued.
        """
        while self.state is not State.CLOSED:
            try:
                event = self._next_event()
            except ProtocolError as exc:
                self._fail(exc.code, exc.reason)
                raise
            if event is None:
                return
            yield event

    def _fail(self, code: int, reason: str) -> None:
        if self.state is State.OPEN:
            self.send_close(code, reason)
        self.state = State.CLOSED
        self._buffer.clear()

    def _next_event(self) -> Event | None:
        """One event from the buffer, or None when a whole frame has not arrived yet."""
        while True:
            frame = self._parse_frame()
            if frame is None:
                return None
            fin, rsv1, opcode, payload = frame
            if opcode in CONTROL_OPCODES:
                return self._control(opcode, payload)
            event = self._data(fin, rsv1, opcode, payload)
            if event is not None:
                return event

    def _parse_frame(self) -> tuple[bool, bool, int, bytes] | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        fin, rsv1, rsv23, opcode = first & 0x80, first & 0x40, first & 0x30, first & 0x0F
        if rsv23 or (rsv1 and self.deflate is None):
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "reserved bits set")
        if opcode not in Opcode._value2member_map_:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if not second & 0x80:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
        length = second & 0x7F
        offset = 2
        if opcode in CONTROL_OPCODES:
            if not fin:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if length > 125:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "control frame over 125 bytes")
            if rsv1:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "compressed control frame")
        if length == 126:
            if len(buf) < 4:
                return None
            (length,) = struct.unpack_from("!H", buf, 2)
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            (length,) = struct.unpack_from("!Q", buf, 2)
            if length >> 63:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "64-bit length with the top bit set")
            offset = 10
        # Refuse before buffering: an attacker announcing 2**62 bytes gets 1009 now.
        # A compressed message is bounded on the wire by the most a valid deflate
        # encoding of max_message_size bytes can take, and again as it inflates.
        if opcode not in CONTROL_OPCODES:
            compressed = rsv1 or self._message_compressed
            wire_limit = (
                deflate_bound(self.max_message_size) if compressed else self.max_message_size
            )
            if self._wire_size + length > wire_limit:
                raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, "message too big")
        end = offset + 4 + length
        if len(buf) < end:
            return None
        if opcode not in CONTROL_OPCODES:
            self._wire_size += length
        mask = bytes(buf[offset : offset + 4])
        payload = apply_mask(memoryview(buf)[offset + 4 : end], mask)
        del buf[:end]
        return bool(fin), bool(rsv1), opcode, payload

    def _control(self, opcode: int, payload: bytes) -> Event | None:
        if opcode == Opcode.PING:
            if self.state is State.OPEN:
                self._outgoing.append(encode_frame(Opcode.PONG, payload))
            return Ping(payload)
        if opcode == Opcode.PONG:
            return Pong(payload)
        code, reason = self._parse_close(payload)
        if self.state is State.OPEN:
            self.send_close(code, reason if code != CloseCode.NO_STATUS else "")
        self.state = State.CLOSED
        self.close_code = code
        return Close(code, reason)

    @staticmethod
    def _parse_close(payload: bytes) -> tuple[int, str]:
        if not payload:
            return CloseCode.NO_STATUS, ""
        if len(payload) == 1:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
        (code,) = struct.unpack_from("!H", payload)
        if not valid_close_code(code):
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
        return code, reason

    def _data(self, fin: bool, rsv1: bool, opcode: int, payload: bytes) -> Event | None:
        if opcode == Opcode.CONTINUATION:
            if self._message_opcode is None:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "continuation without a message")
            if rsv1:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "RSV1 on a continuation frame")
        else:
            if self._message_opcode is not None:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "new message before the last ended")
            self._message_opcode = opcode
            self._message_compressed = rsv1
        if self._message_compressed:
            assert self.deflate is not None
            limit = self.max_message_size - self._message_size
            try:
                payload = self.deflate.decompress(payload, limit, final=fin)
            except DecompressionTooLarge:
                raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, "message too big") from None
            except zlib.error:
                raise ProtocolError(CloseCode.INVALID_DATA, "invalid compressed data") from None
        self._message_size += len(payload)
        if self._message_size > self.max_message_size:
            raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, "message too big")
        self._fragment_count += 1
        if self._fragment_count > self.max_fragments:
            raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, "message in too many fragments")
        is_text = self._message_opcode == Opcode.TEXT
        if fin and not self._message:  # a message in one frame: the common case, no copy
            data = payload
        else:
            if is_text:  # checked as it comes: fails on the fragment where UTF-8 goes wrong
                try:
                    self._utf8.decode(payload, final=fin)
                except UnicodeDecodeError:
                    raise ProtocolError(CloseCode.INVALID_DATA, "text is not valid UTF-8") from None
            self._message += payload
            if not fin:
                return None
            data = bytes(self._message)
        event: Event
        if is_text:
            try:
                event = TextMessage(data.decode("utf-8"))
            except UnicodeDecodeError:
                raise ProtocolError(CloseCode.INVALID_DATA, "text is not valid UTF-8") from None
        else:
            event = BinaryMessage(data)
        self._message = bytearray()
        self._fragment_count = 0
        self._utf8.reset()
        self._message_opcode = None
        self._message_compressed = False
        self._message_size = 0
        self._wire_size = 0
        return event
