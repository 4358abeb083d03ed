"""Every refusal of the transfer server, as one tree (stdlib only, like :mod:`apps.transfer.wire`).

Each class carries a protocol-neutral ``code``: the TCP server sends it as
its error (the codes of :data:`apps.transfer.wire.ERRORS`), the tus server
looks its HTTP status up in one table (``tus.HTTP_STATUS``). ``message`` is
what the client is told.

::

    TransferError                    code
     +-- BadRequest                  bad_request        malformed input
     |    +-- ProtocolError          bad_request        a TCP message broke the protocol
     |    |    +-- PeerClosed        bad_request        the peer closed the connection
     |    +-- UnsupportedMediaType   unsupported_media_type  (HTTP only: a PATCH's Content-Type)
     +-- UploadGone                  not_found          no such upload (or not yours)
     +-- UploadExpired               expired            the unfinished upload expired
     +-- UploadBusy                  busy               another request is writing to it
     +-- OffsetMismatch              conflict           the upload stands elsewhere
     +-- ChecksumMismatch            checksum_mismatch  bytes that are not the declared ones
     |    +-- FileCorrupt            checksum_mismatch  ...the whole file's (the upload is deleted)
     +-- UploadTooLong               too_large          over the size limit or the upload's length
     +-- QuotaExceeded               quota              over the owner's quota
     +-- StorageFull                 disk_full          the server's disk is full

The transfer client has errors of its own (:mod:`apps.transfer.client.errors`):
they are what a command exits with, not what a server refuses.
"""

from __future__ import annotations


class TransferError(Exception):
    """A refused transfer step; ``code`` says which refusal, ``message`` says why.

    ``headers`` are extra response headers for an HTTP answer (a tus
    ``Location``); the TCP server has no use for them.
    """

    code = "bad_request"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class BadRequest(TransferError):
    code = "bad_request"


class ProtocolError(BadRequest):
    """A peer broke the TCP protocol; answered with its code, then the connection is closed."""


class PeerClosed(ProtocolError):
    """The connection ended (EOF) where a message was expected or inside one."""

    def __init__(self, message: str = "the connection was closed") -> None:
        super().__init__(message)


class UnsupportedMediaType(BadRequest):
    code = "unsupported_media_type"


class UploadGone(TransferError):
    code = "not_found"


class HashFirst(TransferError):
    """A PUSH with its SHA-256 in a trailer may be resuming an upload only the hash finds."""

    code = "hash_first"


class UploadExpired(TransferError):
    code = "expired"


class UploadBusy(TransferError):
    code = "busy"


class OffsetMismatch(TransferError):
    code = "conflict"

    def __init__(self, expected: int, given: int) -> None:
        super().__init__(f"the upload is at offset {expected}, not {given}")
        self.expected = expected


class ChecksumMismatch(TransferError):
    code = "checksum_mismatch"


class FileCorrupt(ChecksumMismatch):
    """The whole file's SHA-256 is not what the client declared; the upload is deleted."""


class UploadTooLong(TransferError):
    code = "too_large"


class QuotaExceeded(TransferError):
    """The owner's files and uploads would pass ``TRANSFER_USER_QUOTA``."""

    code = "quota"

    def __init__(self, used: int, quota: int, wanted: int) -> None:
        super().__init__(
            f"this upload needs {wanted} bytes and only {max(quota - used, 0)} of your"
            f" {quota}-byte quota are free"
        )
        self.used, self.quota, self.wanted = used, quota, wanted


class StorageFull(TransferError):
    code = "disk_full"
