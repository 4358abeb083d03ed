"""The TCP fast path's wire format, shared by the server (:mod:`apps.transfer.tcp`) and the client.

Stdlib only: the client (:mod:`apps.transfer.client`) runs where there is no
Flask, no database and no server settings. ``PROTOCOL.md`` beside this file
describes the protocol; this module is what both ends agree on: framing
(length-prefixed JSON control messages), the limits, the HMAC answer to a
challenge, the shapes of keys, ids and digests, and the error codes.

Two layers: pure functions (no I/O), then blocking helpers that move one
message over a socket. Malformed input raises
:class:`~apps.transfer.exceptions.ProtocolError` (``PeerClosed`` for an early EOF).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import socket
import ssl
import struct
from collections.abc import Mapping
from typing import Any, BinaryIO

from apps.transfer.exceptions import PeerClosed, ProtocolError

VERSION = 1
MAX_MESSAGE = 64 * 1024  # bytes of JSON in one control message
NONCE_BYTES = 32
AUTH_CONTEXT = b"flaskmono-transfer-v1\n"  # binds the MAC to this protocol and version

#: An API key as a client presents it: ``fmk_<key id>_<secret>`` (minted by the accounts app,
#: whose own pattern a test holds equal to this one).
KEY_PATTERN = re.compile(r"^fmk_(?P<key_id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")
KEY_ID = re.compile(r"^[0-9a-f]{16}$")
FILE_ID = re.compile(r"^[0-9a-f]{32}\Z")  # the ids files are stored by
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

_LENGTH = struct.Struct("!I")
_TLS_BLOCK = 1 << 20  # bytes per read when a file goes out over TLS

#: Every error code a server may answer with, and what it means (PROTOCOL.md lists them too).
ERRORS = {
    "auth_failed": "the key or its HMAC answer is wrong",
    "bad_request": "a message is malformed or breaks the protocol",
    "busy": "the server or this upload is busy; try again shortly",
    "checksum_mismatch": "the bytes received do not have the declared SHA-256",
    "conflict": "the upload moved on meanwhile; ask again for the offset",
    "disk_full": "the server's disk is full",
    "expired": "the unfinished upload expired; start again",
    "hash_first": "an unfinished upload of this name and size exists: send the SHA-256 first",
    "internal": "the server failed; see its log",
    "not_found": "no such file (or not yours)",
    "quota": "the upload does not fit in your quota",
    "shutting_down": "the server is stopping",
    "timeout": "the connection was silent for too long",
    "too_large": "the file is larger than the server accepts",
    "unavailable": "a service the server needs is down; try again shortly",
}


# -- no I/O ------------------------------------------------------------------------------------


def encode_message(message: Mapping[str, Any]) -> bytes:
    """One control message: 4-byte big-endian length, then compact UTF-8 JSON."""
    payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(payload) > MAX_MESSAGE:
        raise ValueError(f"a control message may be at most {MAX_MESSAGE} bytes")
    return _LENGTH.pack(len(payload)) + payload


def message_length(header: bytes) -> int:
    """The length a 4-byte header announces.

    Raises:
        ProtocolError: over :data:`MAX_MESSAGE` (the payload is never read).
    """
    (length,) = _LENGTH.unpack(header)
    if length > MAX_MESSAGE:
        raise ProtocolError(
            f"a control message of {length} bytes is over the {MAX_MESSAGE}-byte limit"
        )
    return int(length)


def decode_message(payload: bytes) -> dict[str, Any]:
    """The JSON object in a payload; anything else is a :class:`ProtocolError`."""
    try:
        message = json.loads(payload.decode())
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("a control message is not UTF-8 JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("a control message must be a JSON object")
    return message


def auth_mac(secret: bytes, nonce: bytes, key_id: str) -> str:
    """The answer to a challenge: hex HMAC-SHA256(secret, context + nonce + key id)."""
    return hmac.new(secret, AUTH_CONTEXT + nonce + key_id.encode(), hashlib.sha256).hexdigest()


def error_message(code: str, message: str | None = None) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message or ERRORS[code]}


def encode_nonce(nonce: bytes) -> str:
    return base64.b64encode(nonce).decode()


def decode_nonce(value: Any) -> bytes:
    """The challenge's nonce (clients use this); ValueError if it is not 32 base64 bytes."""
    try:
        nonce = base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError):
        raise ValueError("the challenge's nonce is not base64") from None
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"the challenge's nonce is not {NONCE_BYTES} bytes")
    return nonce


# -- one message over a blocking socket --------------------------------------------------------


def recv_exact(sock: socket.socket, count: int) -> bytes:
    """Exactly *count* bytes; :class:`PeerClosed` if the peer ends the stream first."""
    buffer = bytearray(count)
    view = memoryview(buffer)
    filled = 0
    while filled < count:
        n = sock.recv_into(view[filled:])
        if not n:
            raise PeerClosed(f"the connection closed {count - filled} bytes short of a message")
        filled += n
    return bytes(buffer)


def read_message(sock: socket.socket) -> dict[str, Any]:
    """The next control message (raises PeerClosed, ProtocolError, or socket errors)."""
    header = sock.recv(_LENGTH.size)
    if not header:
        raise PeerClosed()
    if len(header) < _LENGTH.size:
        header += recv_exact(sock, _LENGTH.size - len(header))
    return decode_message(recv_exact(sock, message_length(header)))


def send_message(sock: socket.socket, message: Mapping[str, Any]) -> None:
    sock.sendall(encode_message(message))


def send_file(sock: socket.socket, file: BinaryIO, offset: int, count: int) -> int:
    """Send *count* bytes of *file* from *offset*; returns how many went (fewer: file shorter).

    Plain sockets use ``sendfile(2)``: the bytes never enter the process. TLS
    has to encrypt them here, and ``SSLSocket.sendfile`` would read 8 KiB at a
    time, so TLS gets 1 MiB reads instead.
    """
    if count <= 0:
        return 0  # (socket.sendfile takes a count of 0 to mean "to the end")
    if not isinstance(sock, ssl.SSLSocket):
        return sock.sendfile(file, offset, count)
    sent = 0
    while sent < count:
        block = os.pread(file.fileno(), min(_TLS_BLOCK, count - sent), offset + sent)
        if not block:
            break
        sock.sendall(block)
        sent += len(block)
    return sent
