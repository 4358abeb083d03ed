"""Handing a download's body to nginx with ``X-Accel-Redirect`` (``TRANSFER_ACCEL_REDIRECT``).

Why: a 50 GiB download to a slow client would hold a gunicorn thread for
hours; nginx sends files with no thread per client. The app still decides
everything (who may read the file, 304, 416, the headers); nginx only sends
the bytes, from the ``internal`` location named by the setting, which is an
alias of ``MEDIA_ROOT/transfer/`` (``deploy/nginx/flaskmono.conf``).

nginx applies the client's ``Range`` and ``If-Range`` again on its own, against
the ``ETag`` and ``Last-Modified`` the app sent (the shipped location copies
them back), so for the answers handed over its range is the app's. The few
requests where the two could differ are sent by gunicorn as before: a Range
the app ignored (malformed, several ranges, a suffix past the end), and the
preconditions nginx would judge against its own validators (``If-Match``,
``If-Unmodified-Since``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from flask import Request
from werkzeug.wrappers import Response

#: Request headers whose answer nginx could decide differently from the app.
_OWN_PRECONDITIONS = ("If-Match", "If-Unmodified-Since")


def can_hand_over(request: Request, response: Response) -> bool:
    """Whether nginx would send exactly the body the app's *response* promises."""
    if any(name in request.headers for name in _OWN_PRECONDITIONS):
        return False
    if response.status_code == 206:
        return True
    # 304 and 416 carry no body; a Range answered with 200 was ignored on purpose.
    return response.status_code == 200 and "Range" not in request.headers


def hand_over(response: Response, path: Path, root: Path, prefix: str) -> None:
    """Turn *response* into the headers-only answer that sends nginx to *path*.

    Args:
        response: the download as the app built it (headers, status 200 or 206).
        path: the file on disk, under *root* (``MEDIA_ROOT/transfer``).
        root: what the nginx location *prefix* is an alias of.
        prefix: ``TRANSFER_ACCEL_REDIRECT``, starting and ending with ``/``.
    """
    response.close()  # the body (and its open file) is nginx's now
    response.response = []
    response.status_code = 200  # nginx answers 200 or 206 from the request's own Range
    # nginx sets these for what it sends (Accept-Ranges too: the app's would be doubled).
    for header in ("Content-Length", "Content-Range", "Accept-Ranges"):
        response.headers.pop(header, None)
    response.headers["X-Accel-Redirect"] = quote(prefix + path.relative_to(root).as_posix())
