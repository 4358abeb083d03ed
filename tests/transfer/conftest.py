"""What the transfer tests share: a user with an API key, the app served over HTTP."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from apps.accounts import apikeys
from apps.transfer import storage
from tests.conftest import create_account


@dataclass(frozen=True)
class Owner:
    user_id: int
    username: str
    key: str  # the whole API key, fmk_<id>_<secret>

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_owner(app: Flask, username: str) -> Owner:
    with app.app_context():
        user_id = create_account(username)
        _, key = apikeys.create_key(user_id, "tests")
    return Owner(user_id, username, key)


@pytest.fixture
def owner(app: Flask) -> Owner:
    return make_owner(app, "alice")


@pytest.fixture
def other(app: Flask) -> Owner:
    return make_owner(app, "mallory")


def random_file(path: Path, size: int) -> str:
    """Write *size* random bytes to *path*; returns their SHA-256 (hex)."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def media(app: Flask) -> Iterator[Path]:
    """The app's transfer storage root, so tests can look at what is on disk."""
    yield Path(app.config["MEDIA_ROOT"]) / "transfer"


OwnerFactory = Callable[..., tuple[Flask, str, Owner]]


@pytest.fixture
def owner_factory(make_app: Any) -> Iterator[OwnerFactory]:
    """An app with extra settings, served over HTTP, and a user with a key on it."""
    from werkzeug.serving import make_server

    servers = []

    def factory(**settings: Any) -> tuple[Flask, str, Owner]:
        app = make_app(**settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return app, f"http://127.0.0.1:{server.server_port}", make_owner(app, "alice")

    yield factory
    for server in servers:
        server.shutdown()
        server.server_close()


def store_file(app: Flask, owner: Owner, name: str, data: bytes, **fields: Any) -> str:
    """A finished file of *data*, put in place through the storage layer; returns its id."""
    with app.app_context():
        upload = storage.start_upload(owner.user_id, filename=name, size=len(data), **fields)
        stream = io.BytesIO(data)
        done = storage.receive(upload, 0, stream.readinto)
        assert done.complete
        return done.id
