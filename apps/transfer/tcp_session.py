"""One TCP fast-path connection: the HMAC challenge, then PUSH, PULL and STAT until it ends.

:mod:`apps.transfer.tcp` accepts connections and hands each to a
:class:`Session` on its own thread. A session uses one app context per
operation, so an idle connection holds no database connection, and checks
its key again before every operation, so a key revoked meanwhile stops there.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import logging
import mimetypes
import re
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, TypeGuard

from apps.transfer import models, storage, tusmeta
from apps.transfer.exceptions import (
    HashFirst,
    OffsetMismatch,
    PeerClosed,
    ProtocolError,
    TransferError,
)
from apps.transfer.models import TransferFile
from apps.transfer.names import clean_filename
from apps.transfer.wire import (
    ERRORS,
    FILE_ID,
    KEY_ID,
    NONCE_BYTES,
    SHA256_HEX,
    VERSION,
    auth_mac,
    encode_nonce,
    error_message,
    read_message,
    send_file,
    send_message,
)
from project.auth import key_secret, mark_key_used
from project.db import DatabaseError
from project.outages import OUTAGES, log_outage

if TYPE_CHECKING:
    from apps.transfer.tcp import TransferServer

log = logging.getLogger("apps.transfer.tcp")

VERSION_TAG = re.compile(r"^[0-9a-f]{0,64}\Z")
_DRAIN_SECONDS = 2.0  # how long an error reply waits for the peer's unread bytes before closing


@dataclass
class _User:
    id: int
    name: str


class _Body:
    """``readinto`` over the socket for the raw bytes of one PUSH (the :data:`storage.Reader`).

    :func:`storage.receive` calls it only once it holds the upload's lock and
    has checked the offset, so the ``ok`` reply with the offset is sent from
    the first call: the client never starts sending for an offset that is
    stale or an upload another connection is still writing.
    """

    def __init__(self, sock: socket.socket, upload: TransferFile, offset: int) -> None:
        self.sock, self.upload, self.offset = sock, upload, offset
        self.remaining = upload.size - offset
        self.started = 0.0  # monotonic time of the reply; 0 until then

    def __call__(self, view: memoryview) -> int:
        if not self.started:
            send_message(
                self.sock, {"ok": True, "upload_id": self.upload.id, "offset": self.offset}
            )
            self.started = time.monotonic()
        if not self.remaining:
            return 0  # past the declared size the next bytes are a control message
        n = self.sock.recv_into(view, min(len(view), self.remaining))
        self.remaining -= n
        return n

    @property
    def in_sync(self) -> bool:
        """Whether the next bytes on the wire are a control message (so the connection goes on)."""
        return not self.started or not self.remaining


class Session:
    """One connection: the challenge, then operations until the peer leaves or errs."""

    def __init__(self, server: TransferServer, sock: socket.socket, peer: str) -> None:
        self.server, self.app, self.sock, self.peer = server, server.app, sock, peer
        self.user: _User | None = None
        self.key_id = ""

    def run(self, proven: Callable[[], bool]) -> None:
        """Authenticate, then take a slot and serve operations until the peer leaves.

        Args:
            proven: tells the server the key is proven (stops the pre-auth deadline);
                False when the deadline cut the connection first.
        """
        try:
            self.user = self._authenticate()
            if self.user is None or not proven():
                return
            if not self.server.slots.acquire(blocking=False):
                self.refuse("busy", "the server has as many clients as it serves at once")
                return
            try:
                self._reply({"ok": True, "user": self.user.name})
                self._serve()
            finally:
                self.server.slots.release()
        except PeerClosed:
            return  # a peer leaving between messages is how a session ends
        except ProtocolError as exc:
            self.refuse(exc.code, exc.message)
        except TimeoutError:
            self.refuse("timeout", f"nothing received for {self.server.idle_timeout:g} s")
        except OUTAGES as exc:  # expected on a bad day: one line, and the client retries
            log_outage(exc, f"serving a transfer to {self.peer}")
            self.refuse("unavailable")
        except DatabaseError:
            log.exception("database error serving %s", self.peer)
            self.refuse("internal")
        except OSError as exc:  # reset, broken pipe, TLS alerts: the peer is gone
            log.info("connection from %s ended: %s", self.peer, exc)

    def _serve(self) -> None:
        operations: dict[str, Callable[[dict[str, Any]], bool]]
        operations = {"push": self.push, "pull": self.pull, "stat": self.stat}
        while True:
            request = read_message(self.sock)
            if not self._key_still_valid():
                self.refuse("auth_failed", "the key was revoked")
                return
            operation = operations.get(str(request.get("op")))
            if operation is None:
                raise ProtocolError(f"unknown op {str(request.get('op'))[:40]!r}")
            with self.server.operation(self.sock):
                if self.server.closing:  # stopping: finish nothing new
                    self.refuse("shutting_down")
                    return
                done = not operation(request)
            if done:
                return

    def _key_still_valid(self) -> bool:
        """The key is looked up again before each operation: revoking it ends the connection."""
        assert self.user is not None
        with self.app.app_context():
            found = key_secret(self.key_id)
        return found is not None and found[0].id == self.user.id

    def refuse(self, code: str, message: str | None = None) -> None:
        """Send an error, then close gracefully: read (and drop) what the peer still sends.

        Closing with unread bytes in the receive buffer makes the kernel send a
        reset, which can destroy the error reply before the client reads it.
        """
        with contextlib.suppress(OSError):
            send_message(self.sock, error_message(code, message))
            socket.socket.shutdown(self.sock, socket.SHUT_WR)
            self.sock.settimeout(_DRAIN_SECONDS)
            deadline = time.monotonic() + _DRAIN_SECONDS
            while time.monotonic() < deadline and self.sock.recv(1 << 16):
                pass

    def _reply(self, message: Mapping[str, Any]) -> None:
        send_message(self.sock, message)

    # -- authentication --

    def _authenticate(self) -> _User | None:
        nonce = secrets.token_bytes(NONCE_BYTES)
        self._reply({"type": "challenge", "version": VERSION, "nonce": encode_nonce(nonce)})
        answer = read_message(self.sock)
        key_id, mac = answer.get("key_id"), answer.get("mac")
        if answer.get("type") != "auth" or not isinstance(key_id, str) or not isinstance(mac, str):
            raise ProtocolError('expected {"type": "auth", "key_id", "mac"}')
        if not (key_id.isascii() and mac.isascii()):  # JSON allows lone surrogates
            raise ProtocolError("key_id and mac must be ASCII")
        user = self._check_answer(nonce, key_id, mac)
        if user is None:
            log.info("auth failed for key %r from %s", key_id[:16], self.peer)
            self.refuse("auth_failed", "the key is unknown or revoked, or the answer is wrong")
            return None
        self.key_id = key_id
        return user

    def _check_answer(self, nonce: bytes, key_id: str, mac: str) -> _User | None:
        with self.app.app_context():
            found = key_secret(key_id) if KEY_ID.match(key_id) else None
        secret = found[1] if found else self.server.dummy_secret
        # Compared even for an unknown key, so the time taken does not tell keys apart.
        matches = hmac.compare_digest(auth_mac(secret, nonce, key_id).encode(), mac.encode())
        if not matches or found is None:
            return None
        with self.app.app_context():
            mark_key_used(key_id)
        account = found[0]
        return _User(account.id, account.username)

    # -- operations (each returns whether the connection can go on) --

    def push(self, request: dict[str, Any]) -> bool:
        push = _push_fields(request)
        name = push.name
        assert self.user is not None
        with self.app.app_context():
            try:
                upload = _find_or_start(self.user.id, push)
            except TransferError as exc:
                return self._refused(name, exc, in_sync=True)
            body = _Body(self.sock, upload, upload.received)
            trailer = None if push.sha256 else functools.partial(_read_trailer, self.sock)
            try:
                result = _receive(body, trailer)
            except TransferError as exc:
                return self._refused(name, exc, in_sync=body.in_sync)
            except OSError as exc:  # the client vanished or went silent; its bytes are kept
                self._log_push(body, upload, "interrupted", f" ({exc or type(exc).__name__})")
                return False
        if not result.complete:  # the client closed the connection mid-file
            self._log_push(body, upload, "interrupted", f" at byte {result.received}")
            return False
        self._reply(
            {"ok": True, "file_id": result.id, "sha256": result.sha256, "size": result.size}
        )
        self._log_push(body, result, "done")
        return True

    def _refused(self, name: str, exc: TransferError, in_sync: bool) -> bool:
        """Answer a refused push; a refusal mid-file also ends the connection."""
        assert self.user is not None
        log.info("push of %r by %s refused: %s", name, self.user.name, exc)
        if not in_sync:
            self.refuse(exc.code, exc.message)
            return False
        self._reply(error_message(exc.code, exc.message))
        return True

    def _log_push(self, body: _Body, upload: TransferFile, outcome: str, detail: str = "") -> None:
        moved = upload.size - body.offset - body.remaining
        self._log("push", outcome, upload, moved, body.started, body.offset, detail)

    def pull(self, request: dict[str, Any]) -> bool:
        file_id, offset = request.get("file_id"), request.get("offset", 0)
        if not _is_count(offset):
            raise ProtocolError("offset must be a whole number")
        file, handle = self._open_own(file_id)
        if file is None or handle is None:
            return True
        with handle:
            if offset > file.size:
                self._reply(error_message("bad_request", f"offset {offset} is past the end"))
                return True
            self._reply(_describe(file))
            started = time.monotonic()
            sent = 0
            try:
                sent = send_file(self.sock, handle, offset, file.size - offset)
            except OSError as exc:
                self._log("pull", "interrupted", file, sent, started, offset, f" ({exc})")
                return False
        self._log("pull", "done", file, sent, started, offset)
        return True

    def stat(self, request: dict[str, Any]) -> bool:
        file, handle = self._open_own(request.get("file_id"))
        if file is not None and handle is not None:
            handle.close()
            self._reply(_describe(file))
        return True

    def _open_own(self, file_id: Any) -> tuple[TransferFile | None, BinaryIO | None]:
        """The user's finished file and an open handle, or (None, None) after a not_found."""
        assert self.user is not None
        with self.app.app_context():
            valid = isinstance(file_id, str) and FILE_ID.match(file_id)
            file = models.get(file_id, owner_id=self.user.id) if valid else None
            if file is not None and file.complete:
                try:
                    return file, storage.open_file(file)
                except FileNotFoundError:
                    log.error("file %s is in the database but not on disk", file.id)
        self._reply(error_message("not_found", "no such file"))
        return None, None

    def _log(
        self,
        op: str,
        outcome: str,
        file: TransferFile,
        moved: int,
        started: float,
        offset: int,
        detail: str = "",
    ) -> None:
        """One line per transfer: who, what, how many bytes, how fast."""
        assert self.user is not None
        seconds = time.monotonic() - started if started else 0.0
        rate = moved / seconds / 1e6 if seconds > 0 else 0.0
        resumed = f" from byte {offset}" if offset else ""
        log.info(
            "%s %s: %s %s (%s, %d bytes) %d bytes%s in %.2f s, %.1f MB/s, from %s%s",
            *(op, outcome, self.user.name, file.id, file.filename, file.size),
            *(moved, resumed, seconds, rate, self.peer, detail),
        )


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_sha256(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and SHA256_HEX.match(value) is not None


@dataclass(frozen=True)
class _PushRequest:
    name: str
    size: int
    sha256: str | None  # None: it comes in a trailer, after the bytes
    version: str = ""  # with a trailer: the client's name for this version of the file


def _push_fields(request: dict[str, Any]) -> _PushRequest:
    name, size, sha256 = request.get("name"), request.get("size"), request.get("sha256")
    if not isinstance(name, str) or not _is_count(size):
        raise ProtocolError("push needs a name and a size in bytes")
    if request.get("checksum") == "trailer" and "sha256" not in request:
        version = request.get("version", "")
        if not isinstance(version, str) or not VERSION_TAG.match(version):
            raise ProtocolError("version must be up to 64 hex digits")
        return _PushRequest(clean_filename(name), size, None, version)
    if not _is_sha256(sha256):
        raise ProtocolError(
            'push needs the file\'s sha256 as 64 hex digits, or "checksum": "trailer"'
        )
    return _PushRequest(clean_filename(name), size, sha256)


def _read_trailer(sock: socket.socket) -> str:
    """The SHA-256 a client declares after the bytes of a PUSH with ``"checksum": "trailer"``."""
    sha256 = read_message(sock).get("sha256")
    if not _is_sha256(sha256):
        raise ProtocolError('the trailer must be {"sha256": <64 hex digits>}')
    return sha256


def _describe(file: TransferFile) -> dict[str, Any]:
    name, sha256 = file.filename, file.sha256
    return {"ok": True, "file_id": file.id, "size": file.size, "sha256": sha256, "name": name}


def _find_or_start(owner_id: int, push: _PushRequest) -> TransferFile:
    """The unfinished upload of these bytes under this name, or a new one.

    With the SHA-256 declared up front, the upload must have been declared with
    the same one. With a trailer, it must be a trailer PUSH's of the same name,
    size and version (the client's name for this version of its file, so that a
    file changed between attempts starts afresh); should its bytes still not be
    this file's, the hash check at the end deletes it.
    """
    name, sha256 = push.name, push.sha256
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    # What a tus client would have sent, so HEAD shows the same for either path; a
    # trailer PUSH says so in it, which is how a later one finds it again.
    declared = {"sha256": sha256} if sha256 else {"checksum": "trailer", "version": push.version}
    metadata = tusmeta.encode({"filename": name, "filetype": content_type, **declared})
    found = models.find_resumable(owner_id, name, push.size, sha256, metadata)
    if found is not None:
        return found
    if sha256 is None and models.has_hashed_unfinished(owner_id, name, push.size):
        # Perhaps these very bytes, pushed by a client that sent the hash first:
        # only the hash can tell, so the client is asked for it before any byte.
        raise HashFirst(ERRORS["hash_first"])
    return storage.start_upload(
        owner_id,
        filename=name,
        size=push.size,
        content_type=content_type,
        metadata=metadata,
        expected_sha256=sha256,
    )


def _receive(body: _Body, trailer: Callable[[], str] | None) -> TransferFile:
    """:func:`storage.receive`, asking once more if the upload moved on before the lock.

    Between looking the upload up and locking it, a connection that had just
    been cut may have recorded its last bytes; the offset it left is the one to use.
    """
    try:
        return storage.receive(body.upload, body.offset, body, declared_after=trailer)
    except OffsetMismatch as exc:
        if body.started or exc.expected >= body.upload.size:
            raise
        body.offset, body.remaining = exc.expected, body.upload.size - exc.expected
        return storage.receive(body.upload, body.offset, body, declared_after=trailer)
