"""Server-side sessions (Flask-Session 0.8): Redis when configured, files otherwise.

The cookie holds only a random 256-bit session id; the data stays on the
server, serialized with msgpack on both backends. Flask-Session's Redis
backend encodes with msgspec already; its cachelib backend would hand the
raw dict to cachelib's ``FileSystemCache``, which pickles it, so the
filesystem store here swaps cachelib's serializer for msgpack as well:
a session file is never unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import msgspec
from cachelib.file import FileSystemCache
from cachelib.serializers import FileSystemSerializer
from flask import Flask
from flask_session import Session


class MsgpackFileSerializer(FileSystemSerializer):
    """cachelib file serializer that writes msgpack instead of pickle."""

    def dump(self, value: Any, f: IO[bytes], protocol: int = 0) -> None:
        f.write(msgspec.msgpack.encode(value))

    def load(self, f: IO[bytes]) -> Any:
        try:
            return msgspec.msgpack.decode(f.read())
        except msgspec.DecodeError:
            return None  # a damaged or foreign file is treated as no session


class MsgpackFileSystemCache(FileSystemCache):
    serializer = MsgpackFileSerializer()


def init_sessions(app: Flask, session: Session) -> None:
    """Configure Flask-Session for the app's stack, then bind it."""
    config = app.config
    prefix = config["REDIS_KEY_PREFIX"]
    config["SESSION_KEY_PREFIX"] = f"{prefix}session:"
    if config.get("REDIS"):
        config["SESSION_TYPE"] = "redis"
        config["SESSION_REDIS"] = app.extensions["redis"]
    else:
        directory = Path(config["INSTANCE_PATH"]) / "sessions"
        directory.mkdir(parents=True, exist_ok=True)
        config["SESSION_TYPE"] = "cachelib"
        config["SESSION_CACHELIB"] = MsgpackFileSystemCache(
            str(directory), threshold=100_000, mode=0o600
        )
    session.init_app(app)
