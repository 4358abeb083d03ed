"""The opening handshake (RFC 6455 section 4.2): validate the upgrade request, build the 101.

Cookies authenticate room sockets, and a browser sends them with a WebSocket
opened by any site; so the ``Origin`` must be this site (or one listed in
``WEBSOCKET_ALLOWED_ORIGINS``), else 403: that is what makes cross-site
WebSocket hijacking impossible.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from project.websocket.deflate import PerMessageDeflate, negotiate
from project.websocket.exceptions import HandshakeError

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass(frozen=True)
class Handshake:
    """An accepted handshake: the response headers, and what was negotiated."""

    headers: list[tuple[str, str]]
    subprotocol: str | None = None
    deflate: PerMessageDeflate | None = field(default=None, compare=False)

    def response(self) -> bytes:
        """The complete 101 response, written to the socket before any frame."""
        lines = ["HTTP/1.1 101 Switching Protocols"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept``: base64(SHA-1(key + GUID)) (section 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()  # noqa: S324


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def origin_allowed(origin: str, host: str, scheme: str, allowed: Iterable[str]) -> bool:
    """Same origin as the page (scheme and host, ws->http), or explicitly listed."""
    origin = origin.strip().lower().rstrip("/")
    if origin in {a.lower().rstrip("/") for a in allowed}:
        return True
    parts = urlsplit(origin)
    same_scheme = {"http": "http", "https": "https", "ws": "http", "wss": "https"}.get(scheme)
    return parts.scheme == same_scheme and parts.netloc == host.lower() and not parts.path


def validate(
    method: str,
    protocol: str,
    headers: Mapping[str, str],
    *,
    host: str,
    scheme: str,
    allowed_origins: Iterable[str] = (),
    subprotocols: Iterable[str] = (),
    compression: bool = False,
) -> Handshake:
    """Check an upgrade request; return the handshake to send.

    Args:
        headers: the request headers, names lower-cased, repeated ones joined by ", ".
        host, scheme: what the page was served as, to compare with ``Origin``.

    Raises:
        HandshakeError: 405 (not GET), 400 (not a valid upgrade, bad key), 426 (version),
            403 (origin not allowed).
    """
    if method != "GET":
        raise HandshakeError(405, "a WebSocket handshake is a GET request", {"Allow": "GET"})
    if protocol not in ("HTTP/1.1", "HTTP/2.0"):
        raise HandshakeError(400, "a WebSocket handshake needs HTTP/1.1")
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        raise HandshakeError(
            426,
            "this address only speaks WebSocket",
            {"Upgrade": "websocket", "Connection": "Upgrade"},
        )
    if "upgrade" not in _tokens(headers.get("connection", "")):
        raise HandshakeError(400, "the Connection header must include Upgrade")
    version = headers.get("sec-websocket-version", "").strip()
    if version != "13":
        raise HandshakeError(
            426, "only WebSocket version 13 is supported", {"Sec-WebSocket-Version": "13"}
        )
    key = headers.get("sec-websocket-key", "").strip()
    try:
        valid_key = len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        valid_key = False
    if not valid_key:
        raise HandshakeError(400, "Sec-WebSocket-Key must be the base64 of 16 bytes")
    origin = headers.get("origin")
    if origin is not None and not origin_allowed(origin, host, scheme, allowed_origins):
        raise HandshakeError(403, "this origin may not open a WebSocket here")

    response = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    chosen = None
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    supported = list(subprotocols)
    chosen = next((p for p in offered if p in supported), None)
    if chosen:
        response.append(("Sec-WebSocket-Protocol", chosen))
    deflate = None
    extensions = headers.get("sec-websocket-extensions", "")
    if compression and extensions:
        negotiated = negotiate(extensions)
        if negotiated is not None:
            deflate, value = negotiated
            response.append(("Sec-WebSocket-Extensions", value))
    return Handshake(response, chosen, deflate)
