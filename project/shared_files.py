"""Files one app keeps and others show: the seam between the transfer app and the rest.

The transfer app owns files; the chat attaches them to messages. Neither
imports the other (DESIGN.md): the owner registers how a user's finished file
is described and linked (:func:`file_source`); an app that hands files on
registers who else may read one (:func:`reader_check`) and hears when one is
deleted (:func:`on_delete`). With no owner registered, nothing can be
attached; with no check registered, only owners read their files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

KEY = "shared_files"


@dataclass(frozen=True)
class SharedFile:
    """What another app may know of a user's finished, verified file."""

    id: str
    name: str
    size: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "download_url": download_url(self.id),
        }


Describe = Callable[[int, str], SharedFile | None]  # (owner id, file id) -> the file, if theirs
Link = Callable[[str], str]  # file id -> the URL its readers download it from
ReaderCheck = Callable[[int, str], bool]  # (user id, file id) -> may read it
Deleted = Callable[[str], object]  # file id (what it returns is ignored)


def _registry(app: Flask | None = None) -> dict[str, Any]:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    registry: dict[str, Any] = app.extensions.setdefault(
        KEY, {"describe": None, "link": None, "checks": [], "deleted": []}
    )
    return registry


def file_source(
    app: Flask, describe: Describe, link: Link, endpoints: Callable[[], dict[str, str]]
) -> None:
    """Register the app that owns files (one per site).

    *endpoints* gives the URLs a page uses to offer files: ``list`` (the user's
    finished files, JSON) and ``upload`` (the tus endpoint).
    """
    registry = _registry(app)
    registry["describe"], registry["link"], registry["endpoints"] = describe, link, endpoints


def endpoints() -> dict[str, str] | None:
    """The URLs a page lists and uploads files with; None when no app owns files."""
    source = _registry().get("endpoints")
    return source() if source else None


def reader_check(app: Flask, check: ReaderCheck) -> None:
    """Register a way a user other than the owner may read a file (a grant of one's own)."""
    _registry(app)["checks"].append(check)


def on_delete(app: Flask, listener: Deleted) -> None:
    """Register what to do when a file is deleted (its grants end with it anyway)."""
    _registry(app)["deleted"].append(listener)


def describe(owner_id: int, file_id: str) -> SharedFile | None:
    """*file_id* if it is *owner_id*'s finished, verified file; None otherwise (or no owner app)."""
    source = _registry()["describe"]
    return source(owner_id, file_id) if source else None


def download_url(file_id: str) -> str:
    link = _registry()["link"]
    if link is None:
        raise RuntimeError("no app owns files here (is the transfer app installed?)")
    return str(link(file_id))


def may_read(user_id: int, file_id: str) -> bool:
    """Whether a registered grant lets *user_id*, who does not own it, read *file_id*."""
    return any(check(user_id, file_id) for check in _registry()["checks"])


def deleted(file_id: str) -> None:
    """The owner app calls this once a file is gone."""
    for listener in _registry()["deleted"]:
        listener(file_id)
