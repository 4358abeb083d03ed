"""Links: absolute ones for places outside the site (emails), and the pages' own, kept.

``url_for(..., _external=True)`` takes the scheme and host from the request,
and whoever sends a request chooses its ``Host`` (or ``X-Forwarded-Host``
behind a proxy): a password-reset mail built that way can point the victim at
the attacker's server. These links are built on ``SITE_URL`` alone, so they
also work outside a request (a command that mails a link).

Templates build their links with :func:`template_url_for`: the layout alone
builds the same ten links on every page, 3-4 µs each through Flask and
Werkzeug's router, so each link is built once per app and site root and kept.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, has_request_context, request, url_for

#: Kept links per app; a link's arguments (a key's id, a search) make many per endpoint,
#: so past this many the kept ones are dropped and kept afresh.
_KEPT_MAX = 4096


def site_url_for(endpoint: str, **values: Any) -> str:
    """The absolute URL of *endpoint* on ``SITE_URL``, whatever host the request came to."""
    site = urlsplit(current_app.config["SITE_URL"])
    adapter = current_app.url_map.bind(
        site.netloc, script_name=site.path or "/", url_scheme=site.scheme
    )
    return adapter.build(endpoint, values, force_external=True)


def template_url_for(endpoint: str, **values: Any) -> str:
    """``url_for`` for templates: a link relative to the site root is built once and kept.

    Such a link depends on nothing but the app's URL map, the request's script
    root and the arguments (the project registers no URL defaults and matches
    no hosts). Anything else (a relative endpoint, ``_external``, ``_anchor``,
    unhashable arguments) goes to Flask's ``url_for`` every time.
    """
    if endpoint[:1] == "." or any(name[:1] == "_" for name in values):
        return url_for(endpoint, **values)
    if not has_request_context():  # a template rendered outside a request (a mail, a command)
        return url_for(endpoint, **values)
    try:
        key = (request.script_root, endpoint, *sorted(values.items()))
        kept: dict[Any, str] = current_app.extensions["template_links"]
        link = kept.get(key)
    except TypeError:  # an unhashable or unorderable argument
        return url_for(endpoint, **values)
    if link is None:
        link = url_for(endpoint, **values)
        if len(kept) >= _KEPT_MAX:
            kept.clear()  # mostly one-off links (searches, ids): start again with today's
        kept[key] = link
    return link


def init_template_links(app: Flask) -> None:
    """Templates' ``url_for`` becomes :func:`template_url_for`."""
    if app.url_map.host_matching or app.url_default_functions:
        return  # a link would depend on more than the key: build each one
    app.extensions["template_links"] = {}
    app.jinja_env.globals["url_for"] = template_url_for
