"""The WebSocket stack's errors: one tree, each carrying the code the protocol answers with.

::

    WebSocketError                 code: what the peer is told, where anything is
     ├── HandshakeError            the request is not an acceptable upgrade;
     │                             code (and status): the HTTP status it is refused with
     ├── ProtocolError             the peer broke RFC 6455; code: the close code sent
     │                             (1002 protocol error, 1007 bad data, 1009 too big)
     ├── DecompressionTooLarge     a compressed message inflated past the limit;
     │                             code: 1009, the close it leads to
     └── ConnectionClosed          the connection is closed; code: how (None: unknown)

They are siblings under the base: catching one never catches another.
"""

from __future__ import annotations

from collections.abc import Mapping


class WebSocketError(Exception):
    """Base of the stack's errors; :attr:`code` is what the peer is told, if anything."""

    code: int | None = None


class HandshakeError(WebSocketError):
    """The request is not an acceptable upgrade; answer with :attr:`status` and headers."""

    code: int

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.code = self.status = status
        self.message = message
        self.headers = dict(headers or {})


class ProtocolError(WebSocketError):
    """The peer broke the protocol; :attr:`code` is the close code sent to it."""

    code: int

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class DecompressionTooLarge(WebSocketError):
    """A message inflated past the allowed size."""

    code = 1009  # CloseCode.MESSAGE_TOO_BIG: the protocol closes with it


class ConnectionClosed(WebSocketError):
    """The WebSocket is closed; :attr:`code` says how."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"connection closed ({code})")
        self.code = code
