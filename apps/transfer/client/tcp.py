"""The TCP fast path, client side (``apps/transfer/PROTOCOL.md``)."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from apps.transfer import wire
from apps.transfer.client.errors import (
    ClientError,
    ExitCode,
    Retry,
    TrailerRefused,
    for_server_code,
    reason,
    untrusted,
)
from apps.transfer.client.files import FileDigest, LocalFile, PartFile
from apps.transfer.client.progress import Progress
from apps.transfer.client.transport import Options, Remote, parse_key, tls_context
from apps.transfer.exceptions import PeerClosed, ProtocolError

SEND_SLICE = 4 << 20  # bytes per sendfile() call: the progress bar moves this often
GREETING_TIMEOUT = 10.0  # seconds to wait for the server's challenge


class TcpTransport:
    """The fast path: see ``apps/transfer/PROTOCOL.md``."""

    hashes_while_sending = True  # the SHA-256 goes in a trailer after the bytes

    def __init__(self, options: Options) -> None:
        self.options = options
        self.key_id, self.secret = parse_key(options.key)
        self.tls = tls_context(options) if options.tls or options.cafile else None

    @contextlib.contextmanager
    def _session(self) -> Iterator[socket.socket]:
        """A connected, authenticated socket; network failures become :class:`Retry`."""
        sock = self._connect()
        try:
            self._authenticate(sock)
            yield sock
        except PeerClosed as exc:
            raise Retry(f"the server closed the connection ({exc})") from exc
        except ProtocolError as exc:
            raise ClientError(f"the server broke the protocol: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise Retry(f"connection lost: {reason(exc)}") from exc
        finally:
            sock.close()

    def _connect(self) -> socket.socket:
        host, port = self.options.server
        try:
            sock = socket.create_connection((host, port), timeout=self.options.timeout)
        except OSError as exc:
            raise Retry(f"cannot connect to {host}:{port}: {reason(exc)}") from exc
        if self.tls is None:
            return sock
        try:
            return self.tls.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise untrusted(exc) from exc
        except OSError as exc:
            sock.close()
            raise Retry(f"TLS handshake with {host}:{port} failed: {reason(exc)}") from exc

    def _authenticate(self, sock: socket.socket) -> None:
        # A TLS server waits for the client to speak first, so a plain client would
        # wait for the challenge until the server gives up on it: ask sooner.
        sock.settimeout(min(self.options.timeout, GREETING_TIMEOUT))
        try:
            challenge = _checked(wire.read_message(sock))
        except TimeoutError:
            hint = "" if self.tls else " (if it speaks TLS, pass --tls or --cafile)"
            raise Retry(
                f"the server did not greet us within {sock.gettimeout():g} s{hint}"
            ) from None
        sock.settimeout(self.options.timeout)
        if challenge.get("type") != "challenge" or challenge.get("version") != wire.VERSION:
            raise ClientError(
                f"the server speaks protocol version {challenge.get('version')!r},"
                f" not {wire.VERSION} (or is not a transfer server)"
            )
        try:
            nonce = wire.decode_nonce(challenge.get("nonce"))
        except ValueError as exc:
            raise ClientError(f"the server's challenge is malformed: {exc}") from None
        mac = wire.auth_mac(self.secret, nonce, self.key_id)
        _request(sock, {"type": "auth", "key_id": self.key_id, "mac": mac})

    def push(self, local: LocalFile, progress: Progress) -> tuple[str, str]:
        """Send the file; its SHA-256 goes after the bytes unless *local* already knows it.

        Returns the file id and the SHA-256 the server verified (with a trailer,
        checked here against the hash computed while sending).
        """
        trailer = local.sha256 is None
        declared = (
            {"checksum": "trailer", "version": local.version}
            if trailer
            else {"sha256": local.sha256}
        )
        with self._session() as sock:
            wire.send_message(
                sock, {"op": "push", "name": local.name, "size": local.size, **declared}
            )
            reply = wire.read_message(sock)
            # hash_first: the server may hold an upload of this file that only the hash
            # finds; bad_request: a server from before the trailer. Either way: hash first.
            if trailer and reply.get("error") in ("hash_first", "bad_request"):
                raise TrailerRefused(str(reply.get("message") or reply["error"]))
            reply = _checked(reply)
            offset = int(reply["offset"])
            progress.start(offset)
            digest = FileDigest(local.path, local.size) if trailer else None
            try:
                with open(local.path, "rb") as f:
                    try:
                        _send_file(sock, f, offset, local.size, progress)
                    except OSError as exc:
                        _explain_broken_send(sock)
                        raise Retry(
                            f"connection lost at byte {progress.position}: {reason(exc)}"
                        ) from exc
                sha256 = digest.result() if digest else local.sha256
            finally:
                if digest:
                    digest.cancel()
            try:
                done = _request(sock, {"sha256": sha256} if trailer else {})
            except ClientError as exc:
                if exc.server_code == "checksum_mismatch" and local.changed():
                    raise Retry(f"{local.path} changed while it was being sent") from exc
                raise
        if trailer and done["sha256"] != sha256:  # a declared one is checked by push()
            raise ClientError(
                f"the server kept a file whose SHA-256 is {done['sha256']}, not {sha256}",
                ExitCode.CHECKSUM,
            )
        return str(done["file_id"]), str(done["sha256"])

    def stat(self, file_id: str) -> Remote:
        with self._session() as sock:
            return _remote(_request(sock, {"op": "stat", "file_id": file_id}))

    def pull(self, remote: Remote, part: PartFile, progress: Progress) -> None:
        with self._session() as sock:
            reply = _remote(
                _request(sock, {"op": "pull", "file_id": remote.file_id, "offset": part.position})
            )
            if reply != remote:
                raise ClientError(f"the file changed on the server: {reply} is not {remote}")
            part.receive(sock.recv_into, progress)


def _remote(reply: Mapping[str, Any]) -> Remote:
    return Remote(
        str(reply["file_id"]), str(reply["name"]), int(reply["size"]), str(reply["sha256"])
    )


def _request(sock: socket.socket, message: Mapping[str, Any]) -> dict[str, Any]:
    """Send *message* (none if empty) and read the reply, which must be ``ok``."""
    if message:
        wire.send_message(sock, message)
    return _checked(wire.read_message(sock))


def _checked(reply: dict[str, Any]) -> dict[str, Any]:
    """The reply if it is not an error; else Retry (busy, timeout...) or ClientError."""
    if reply.get("ok") is False:
        code = str(reply.get("error"))
        raise for_server_code(code, str(reply.get("message") or code))
    return reply


def _send_file(
    sock: socket.socket, f: BinaryIO, offset: int, size: int, progress: Progress
) -> None:
    """The file from *offset* to *size*, in slices so the progress bar moves."""
    position = offset
    while position < size:
        count = min(SEND_SLICE, size - position)
        sent = wire.send_file(sock, f, position, count)
        progress.advance(sent)
        position += sent
        if sent < count:
            raise Retry(f"{f.name} got shorter while it was being sent")


def _explain_broken_send(sock: socket.socket) -> None:
    """After a failed send, read the error the server may have sent first (quota, disk full)."""
    with contextlib.suppress(OSError, ProtocolError):
        sock.settimeout(2.0)
        _checked(wire.read_message(sock))
