"""Server-side sessions (Flask-Session 0.8): Redis when configured, files otherwise.

The cookie holds only a random 256-bit session id; the data stays on the
server, serialized with msgpack on both backends, and never unpickled:

* Flask-Session 0.8 encodes with msgpack but, when a stored value does not
  decode, falls back to ``pickle.loads`` on it (slated for removal in 1.0).
  Whoever can write to Redis could then run code in every worker, so the
  interface's serializer is replaced by :class:`StrictMsgpackSerializer`,
  which treats anything that is not a msgpack map as no session.
* Its cachelib backend hands the raw dict to cachelib's ``FileSystemCache``,
  which pickles it; :class:`MsgpackFileSystemCache` writes msgpack instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import msgspec
from cachelib.file import FileSystemCache
from cachelib.serializers import FileSystemSerializer
from flask import Flask
from flask_session import Session


class StrictMsgpackSerializer:
    """Session (de)serializer for Flask-Session: msgpack maps only, no fallbacks."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = msgspec.msgpack.Decoder(dict[str, Any])

    def encode(self, session: Any) -> bytes:
        return self.encoder.encode(dict(session))

    def decode(self, serialized_data: bytes) -> dict[str, Any] | None:
        try:
            return self.decoder.decode(serialized_data)
        except msgspec.DecodeError:
            self.app.logger.warning("discarded a session that is not valid msgpack")
            return None


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
    app.session_interface.serializer = StrictMsgpackSerializer(app)  # type: ignore[attr-defined]
