"""Health of the parts a request depends on, shared by ``/healthz`` and ``manage.py check``.

Each check has two faces. ``detail`` says what failed and where (the engine,
the driver's error, which may name a host and port): it goes to the operator,
in ``manage.py check`` and the log. ``public`` is what ``/healthz`` shows to
anyone who asks: the part's state only, never how to reach it.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask

from ext import frames
from project.db import DatabaseError
from project.extensions import db


@dataclass(frozen=True)
class Check:
    """One part's state: ``ok`` is False only when the part is configured and failing."""

    name: str
    ok: bool
    detail: str
    public: str = ""

    def __post_init__(self) -> None:
        if not self.public:
            object.__setattr__(self, "public", "ok" if self.ok else "failing")


def check_database(app: Flask) -> Check:
    url = app.config["DATABASE"]
    try:
        db.ping()
    except DatabaseError as exc:
        return Check("db", False, f"{url.engine} unreachable: {_first_line(exc)}")
    return Check("db", True, url.engine)


def check_redis(app: Flask) -> Check:
    client: redis.Redis | None = app.extensions.get("redis")
    if client is None:
        return Check("redis", True, "not configured; sessions on the filesystem", public="off")
    try:
        client.ping()
    except redis.RedisError as exc:
        return Check("redis", False, f"unreachable: {_first_line(exc)}")
    return Check("redis", True, "ok")


def check_frames() -> Check:
    return Check("frames", True, frames.BACKEND, public=frames.BACKEND)


def run_checks(app: Flask) -> list[Check]:
    """Every check, in the order they are reported."""
    return [check_database(app), check_redis(app), check_frames()]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
