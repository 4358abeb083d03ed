"""What the tus server and the client share (stdlib only): the version and ``Upload-Metadata``.

``Upload-Metadata`` is ``key base64,key2 base64``, as the spec writes it.

The tus server decodes it; the client and the TCP server (which records what
a tus client would have sent, so HEAD shows the same for either path) encode it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

TUS_VERSION = "1.0.0"
MAX_LENGTH = 4096
_KEY = re.compile(r"^[\x21-\x2b\x2d-\x7e]+$")  # printable ASCII, no comma or space


def encode(values: Mapping[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items()
    )


def decode(header: str) -> dict[str, str]:
    """The key/value pairs; values must be UTF-8. ValueError (with the reason) otherwise."""
    if len(header) > MAX_LENGTH:
        raise ValueError(f"Upload-Metadata is longer than {MAX_LENGTH} characters")
    metadata: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in header.split(","))):
        key, _, value = pair.partition(" ")
        if not _KEY.match(key) or key in metadata:
            raise ValueError(f"Upload-Metadata has a bad or repeated key: {key[:50]!r}")
        try:
            metadata[key] = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(f"Upload-Metadata: the value of {key!r} is not base64 UTF-8") from None
    return metadata
