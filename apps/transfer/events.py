"""What the owner's open pages hear about an upload (``ws /ws/me``), whichever way it came.

:mod:`apps.transfer.storage` calls these as bytes arrive, as an upload
becomes a file and when one is refused for good, so the page's own tus
uploads, any other tus client and the CLI over the TCP fast path all report
alike. The events and their fields are DESIGN.md's ("The personal channel");
:mod:`project.live` carries them to every worker and host and coalesces
progress to a few events a second per upload.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app

from apps.transfer.exceptions import TransferError
from apps.transfer.models import TransferFile
from project import live
from project.shared_files import SharedFile


def progress(upload: TransferFile, offset: int) -> None:
    """Bytes up to *offset* of *upload* are on disk (coalesced: the newest wins)."""
    live.progress(upload.owner_id, upload.id, _progress(upload, offset))


def complete(file: TransferFile) -> None:
    """*file* is verified and in place: its last offset, then the file itself."""
    live.notify(file.owner_id, _progress(file, file.size), ends=file.id)
    shared = SharedFile(file.id, file.filename, file.size, file.sha256 or "")
    live.notify(file.owner_id, {"type": "transfer.complete", "file": shared.as_json()})


def failed(owner_id: int, upload_id: str | None, exc: TransferError, name: str = "") -> None:
    """An upload was refused for good; *upload_id* is None when it was refused before it began.

    Then the message names the file (*name*), the only way a page can tell which it was.
    """
    message = f"{name}: {exc.message}" if upload_id is None and name else exc.message
    live.notify(
        owner_id,
        {"type": "transfer.failed", "upload": upload_id, "code": exc.code, "message": message},
        ends=upload_id,
    )


def _progress(upload: TransferFile, offset: int) -> dict[str, object]:
    return {
        "type": "transfer.progress",
        "upload": upload.id,
        "name": upload.filename,
        "offset": offset,
        "length": upload.size,
    }


def download_path(file_id: str) -> str:
    """The file's download path on this site, the same from a request or the TCP server.

    A path, not a URL: the page that gets it is on the site already, and
    outside a request there is no host to build one from but ``SITE_URL``'s.
    """
    root = urlsplit(current_app.config["SITE_URL"]).path or "/"
    adapter = current_app.url_map.bind("localhost", script_name=root)
    return adapter.build("transfer.download", {"file_id": file_id})
