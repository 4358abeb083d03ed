"""permessage-deflate (RFC 7692): negotiation and the per-message (de)compression.

Offered by clients in ``Sec-WebSocket-Extensions``; accepted only when
``WEBSOCKET_COMPRESSION`` is on. Decompression is capped: a message may not
inflate past the connection's maximum message size, so a small "zip bomb"
frame fails with 1009 instead of filling memory.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from project.websocket.exceptions import DecompressionTooLarge

EMPTY_BLOCK = b"\x00\x00\xff\xff"  # the tail of a sync flush, left off on the wire (7.2.1)


def deflate_bound(size: int) -> int:
    """The most bytes a valid deflate encoding of *size* bytes can take (zlib's compressBound)."""
    return size + (size >> 12) + (size >> 14) + (size >> 25) + 13


@dataclass
class PerMessageDeflate:
    """The parameters both sides agreed on, and the zlib streams that follow them."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    level: int = 6
    _compressor: zlib._Compress = field(init=False, repr=False)
    _decompressor: zlib._Decompress = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._compressor = self._new_compressor()
        # The client's window is at most 15 bits; a 15-bit inflater reads any smaller one.
        self._decompressor = zlib.decompressobj(-15)

    def _new_compressor(self) -> zlib._Compress:
        return zlib.compressobj(self.level, zlib.DEFLATED, -self.server_max_window_bits)

    def compress(self, data: bytes) -> bytes:
        out = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        if self.server_no_context_takeover:
            self._compressor = self._new_compressor()
        return out[:-4] if out.endswith(EMPTY_BLOCK) else out

    def decompress(self, data: bytes, limit: int, *, final: bool) -> bytes:
        """Inflate one frame of a message, at most *limit* bytes.

        Raises:
            DecompressionTooLarge: the output would exceed *limit*.
            zlib.error: the data is not a valid deflate stream.
        """
        if final:
            data += EMPTY_BLOCK
        out = self._decompressor.decompress(data, limit + 1)
        if len(out) > limit or self._decompressor.unconsumed_tail:
            raise DecompressionTooLarge
        # A sender may end a message with a final (BFINAL) block (RFC 7692 7.2.3.4); the
        # stream is then over, and the next message needs a fresh inflater.
        if self._decompressor.eof or (final and self.client_no_context_takeover):
            self._decompressor = zlib.decompressobj(-15)
        return out


def negotiate(header: str) -> tuple[PerMessageDeflate, str] | None:
    """Accept the first permessage-deflate offer we can honour.

    Returns the agreed parameters and the ``Sec-WebSocket-Extensions`` response
    value, or None when nothing acceptable was offered (the connection then
    runs uncompressed).
    """
    for offer in header.split(","):
        name, *raw_params = (part.strip() for part in offer.split(";"))
        if name.lower() != "permessage-deflate":
            continue
        accepted = _accept(raw_params)
        if accepted is not None:
            return accepted
    return None


def _window_bits(value: str, lowest: int) -> bool:
    # ASCII digits only: str.isdigit() also accepts "²", which int() then refuses.
    return re.fullmatch(r"[0-9]{1,2}", value) is not None and lowest <= int(value) <= 15


def _accept(raw_params: list[str]) -> tuple[PerMessageDeflate, str] | None:
    params: dict[str, str | None] = {}
    for raw in raw_params:
        if not raw:
            continue
        name, _, raw_value = raw.partition("=")
        key, value = name.strip().lower(), raw_value.strip().strip('"')
        if key in params:
            return None  # a parameter given twice: decline this offer
        params[key] = value or None
    agreed: dict[str, bool | int] = {}
    response = ["permessage-deflate"]
    for key, given in params.items():
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if given is not None:
                return None
            agreed[key] = True
            response.append(key)
        elif key == "server_max_window_bits":
            # zlib cannot compress with an 8-bit raw window, so such an offer is declined.
            if given is None or not _window_bits(given, 9):
                return None
            agreed[key] = int(given)
            response.append(f"server_max_window_bits={given}")
        elif key == "client_max_window_bits":
            if given is not None and not _window_bits(given, 8):
                return None
            # We inflate with a 15-bit window whatever the client uses: nothing to answer.
        else:
            return None  # an unknown parameter
    return PerMessageDeflate(**agreed), "; ".join(response)  # type: ignore[arg-type]
