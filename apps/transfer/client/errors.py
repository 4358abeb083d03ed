"""How the client fails: exit codes (with their help text), and its two exceptions.

:class:`ClientError` ends the command with its exit code; :class:`Retry` is a
failure worth another attempt (the caller backs off and tries again). Neither
is a server refusal (:mod:`apps.transfer.exceptions`): a server's refusal
reaches the client as an error code, which :func:`for_server_code` turns into one of these.
"""

from __future__ import annotations

import ssl
from enum import IntEnum


class ExitCode(IntEnum):
    """What ``flaskmono-transfer`` and ``manage.py transfer push|pull`` exit with."""

    OK = 0
    ERROR = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    CHECKSUM = 5
    CONNECTION = 6
    REFUSED = 7


#: What each exit code means, for the commands' help.
EXIT_HELP = {
    ExitCode.OK: "done (and verified)",
    ExitCode.ERROR: "any other error (server error, local I/O error)",
    ExitCode.USAGE: "usage: bad arguments, missing or malformed key or file id",
    ExitCode.AUTH: "the server does not accept the key",
    ExitCode.NOT_FOUND: "no such file (or not yours)",
    ExitCode.CHECKSUM: "checksum mismatch: nothing was kept",
    ExitCode.CONNECTION: "could not connect, or the connection kept failing (retries used up)",
    ExitCode.REFUSED: "refused: over quota, file too large, or the server's disk is full",
}

EXIT_CODES = "Exit codes:\n" + "".join(f"  {int(c)}  {text}\n" for c, text in EXIT_HELP.items())


class ClientError(Exception):
    """Ends the command: the message for stderr and the exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.ERROR, server_code: str = ""):
        super().__init__(message)
        self.code, self.server_code = code, server_code


class Retry(Exception):
    """A dropped connection, a busy server, a file that changed: try again (with backoff)."""


class TrailerRefused(Exception):
    """The server wants the SHA-256 before the bytes (it predates the trailer): hash first."""


#: Server error codes (apps.transfer.wire.ERRORS) as exit codes; those not listed are worth a retry.
_EXIT_FOR = {
    "auth_failed": ExitCode.AUTH,
    "not_found": ExitCode.NOT_FOUND,
    "checksum_mismatch": ExitCode.CHECKSUM,
    "quota": ExitCode.REFUSED,
    "too_large": ExitCode.REFUSED,
    "disk_full": ExitCode.REFUSED,
    "bad_request": ExitCode.ERROR,
    "internal": ExitCode.ERROR,
}


def for_server_code(code: str, message: str) -> ClientError | Retry:
    """The error for a server's refusal with *code* (the caller raises it)."""
    if code not in _EXIT_FOR:
        return Retry(f"the server says: {message} ({code})")
    return ClientError(f"the server refused: {message} ({code})", _EXIT_FOR[code], code)


def untrusted(exc: ssl.SSLCertVerificationError) -> ClientError:
    """A certificate the client does not trust: not a thing a retry can fix."""
    return ClientError(
        f"TLS: the server's certificate is not trusted ({exc.verify_message});"
        " pass --cafile with the certificate that signed it",
        ExitCode.CONNECTION,
    )


def reason(exc: BaseException) -> str:
    """A short why for a failed network or file operation."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
