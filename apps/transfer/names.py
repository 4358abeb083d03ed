"""File names as users give them, made safe to show, store and send back.

A name never becomes a path (files are stored by id), but it is shown on pages,
printed by the CLI and sent in ``Content-Disposition``. So it keeps every
language's letters and loses what could mislead or break a header: directory
parts (``../../etc/passwd`` is ``passwd``), control characters (a newline
would split a header), and the invisible bidirectional overrides that make
``exe.pdf`` look like ``fdp.exe``.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

MAX_NAME_BYTES = 255  # what most filesystems accept, so a download can be saved as named
FALLBACK_STEM = "download"
_ASCII_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()+,=@~-]+")


def clean_filename(name: str) -> str:
    """The name to keep: last path part, NFC, no control/format characters, <= 255 UTF-8 bytes.

    Never empty: a name with nothing left becomes ``"unnamed"``.
    """
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(" " if ch.isspace() else ch for ch in name)  # tabs, newlines
    name = "".join(ch for ch in name if unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Co"})
    name = " ".join(name.split())
    name = name.strip(" .") or "unnamed"  # "..", trailing dots (Windows drops them)
    encoded = name.encode()
    if len(encoded) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext = dot + ext if stem and len(ext) <= 16 else ""
        room = MAX_NAME_BYTES - len(ext.encode())
        name = name[: len(name) - len(ext)].encode()[:room].decode(errors="ignore") + ext
    return name


def ascii_filename(name: str, file_id: str) -> str:
    """A meaningful ASCII stand-in for clients that ignore ``filename*``.

    Accents are dropped (``café.txt`` -> ``cafe.txt``); a name with no ASCII left
    in its stem (``文件传输.bin``) becomes ``download-<id>.bin`` rather than
    werkzeug's ``.bin``.
    """
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, ext = name, ""
    ascii_stem, ascii_ext = _to_ascii(stem), _to_ascii(ext).replace(".", "")
    if not re.search(r"[A-Za-z0-9]", ascii_stem):
        ascii_stem = f"{FALLBACK_STEM}-{file_id[:8]}"
    return ascii_stem + (f".{ascii_ext}" if ascii_ext else "")


def _to_ascii(text: str) -> str:
    ascii_only = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _ASCII_UNSAFE.sub("_", ascii_only).strip(" ._")


def content_disposition(name: str, file_id: str) -> str:
    """``attachment`` with an ASCII ``filename`` and the exact name in RFC 5987 ``filename*``."""
    fallback = ascii_filename(name, file_id).replace("\\", "_").replace('"', "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
