"""Requests for a host this site is not: refused with 400 before the app runs.

Flask checks ``TRUSTED_HOSTS`` only once it is already routing the request
(the session is loaded and the hooks have run by then, and the error page
cannot build its links). This middleware answers first, after ``ProxyFix``,
so a forged ``X-Forwarded-Host`` from a trusted proxy is refused the same way
as a forged ``Host``: nothing the app builds from the host (a redirect, a
link) can then point anywhere but this site.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import SecurityError
from werkzeug.wsgi import get_host

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
MESSAGE = "This site does not answer to that host name."


class TrustedHostMiddleware:
    """Answer 400 to a request whose host is not one of *trusted_hosts*."""

    def __init__(self, app: WSGIApp, trusted_hosts: Iterable[str]) -> None:
        self.app = app
        self.trusted_hosts = list(trusted_hosts)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        try:
            get_host(environ, self.trusted_hosts)
        except SecurityError:
            return self._refuse(environ, start_response)
        return self.app(environ, start_response)

    @staticmethod
    def _refuse(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO", "").startswith("/api/"):
            body = json.dumps({"error": "Bad Request", "status": 400, "message": MESSAGE})
            content_type = "application/json"
        else:
            body, content_type = MESSAGE + "\n", "text/plain; charset=utf-8"
        data = body.encode()
        start_response(
            "400 BAD REQUEST",
            [("Content-Type", content_type), ("Content-Length", str(len(data)))],
        )
        return [data]
