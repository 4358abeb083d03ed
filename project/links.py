"""Absolute links for places outside the site (emails), always on ``SITE_URL``.

``url_for(..., _external=True)`` takes the scheme and host from the request,
and whoever sends a request chooses its ``Host`` (or ``X-Forwarded-Host``
behind a proxy): a password-reset mail built that way can point the victim at
the attacker's server. These links are built on ``SITE_URL`` alone, so they
also work outside a request (a command that mails a link).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app


def site_url_for(endpoint: str, **values: Any) -> str:
    """The absolute URL of *endpoint* on ``SITE_URL``, whatever host the request came to."""
    site = urlsplit(current_app.config["SITE_URL"])
    adapter = current_app.url_map.bind(
        site.netloc, script_name=site.path or "/", url_scheme=site.scheme
    )
    return adapter.build(endpoint, values, force_external=True)
