"""What the two transports share: how to reach the server, the seam between them, a remote file."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Protocol

from apps.transfer.client.errors import ClientError, ExitCode
from apps.transfer.client.files import LocalFile, PartFile
from apps.transfer.client.progress import Progress
from apps.transfer.wire import KEY_PATTERN


@dataclass(frozen=True)
class Options:
    """How to reach the server; built by the command line from its options."""

    key: str
    server: tuple[str, int] = ("127.0.0.1", 9000)
    http: str | None = None  # a base URL: go through tus and Range instead of TCP
    tls: bool = False
    cafile: str | None = None
    timeout: float = 60.0
    retries: int = 5
    progress: bool = True


@dataclass(frozen=True)
class Remote:
    """A finished file on the server, as a pull sees it."""

    file_id: str
    name: str
    size: int
    sha256: str


class Transport(Protocol):
    #: Whether :meth:`push` takes a file not yet hashed (it hashes while sending).
    hashes_while_sending: bool

    def push(self, local: LocalFile, progress: Progress) -> tuple[str, str]:
        """Send the file (resuming where the server stands); returns (file id, its SHA-256)."""

    def stat(self, file_id: str) -> Remote: ...

    def pull(self, remote: Remote, part: PartFile, progress: Progress) -> None:
        """Fill *part* from its current position to the end."""


def parse_key(key: str) -> tuple[str, bytes]:
    """The key id and secret of ``fmk_<id>_<secret>`` (a usage error otherwise)."""
    match = KEY_PATTERN.match(key.strip())
    if match is None:
        raise ClientError(
            "the API key is malformed: expected fmk_<16 hex>_<43 chars>", ExitCode.USAGE
        )
    return match["key_id"], match["secret"].encode("ascii")


def parse_server(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``; ValueError with a message otherwise."""
    match = re.match(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})$", value)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return match["v6"] or match["host"], int(match["port"])


def tls_context(options: Options) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
