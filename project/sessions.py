"""Server-side sessions (Flask-Session 0.8): Redis when configured, files otherwise.

Apps use the functions below, never Flask-Session or the backend directly:
:func:`current_sid`, :func:`session_exists` and :func:`delete_session` for one
session by id, and the per-user index (:func:`index_put`, :func:`index_entries`,
:func:`index_remove`, :func:`index_count`) to find all of a user's sessions.
:func:`init_sessions` picks the backend once, for the store and the index alike.

The cookie holds only a random 256-bit session id; the data stays on the
server, serialized with msgpack on both backends, and never unpickled:

* Flask-Session 0.8 encodes with msgpack but, when a stored value does not
  decode, falls back to ``pickle.loads`` on it (slated for removal in 1.0).
  Whoever can write to Redis could then run code in every worker, so the
  interface's serializer is replaced by :class:`StrictMsgpackSerializer`,
  which treats anything that is not a msgpack map as no session.
* Its cachelib backend hands the raw dict to cachelib's ``FileSystemCache``,
  which pickles it; :class:`MsgpackFileSystemCache` writes msgpack instead.

What is stored, and what happens when the store is down, is decided in front
of Flask-Session by :class:`project.session_interface.ProjectSessionInterface`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO, Any, Protocol, cast

import msgspec
import redis
from cachelib.file import FileSystemCache
from cachelib.serializers import FileSystemSerializer
from flask import Flask, current_app, session
from flask_session import Session

from project.revocation import revoke_session
from project.session_interface import ProjectSessionInterface


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


def init_sessions(app: Flask, server_session: Session) -> None:
    """Configure Flask-Session and the per-user index for the app's stack, then bind them."""
    config = app.config
    prefix = config["REDIS_KEY_PREFIX"]
    config["SESSION_KEY_PREFIX"] = f"{prefix}session:"
    index_prefix = f"{prefix}user_sessions:"
    lifetime = config["SESSION_LIFETIME_SECONDS"]
    index: _SessionIndex
    if config.get("REDIS"):
        config["SESSION_TYPE"] = "redis"
        config["SESSION_REDIS"] = app.extensions["redis"]
        index = _RedisIndex(
            app.extensions["redis"], index_prefix, lifetime, config["SESSION_KEY_PREFIX"]
        )
    else:
        directory = Path(config["INSTANCE_PATH"]) / "sessions"
        directory.mkdir(parents=True, exist_ok=True)
        config["SESSION_TYPE"] = "cachelib"
        cache = MsgpackFileSystemCache(str(directory), threshold=100_000, mode=0o600)
        config["SESSION_CACHELIB"] = cache
        index = _CacheIndex(cache, index_prefix, lifetime, config["SESSION_KEY_PREFIX"])
    app.extensions["session_index"] = index
    server_session.init_app(app)
    app.session_interface.serializer = StrictMsgpackSerializer(app)  # type: ignore[attr-defined]
    app.session_interface = ProjectSessionInterface(app.session_interface)


# -- one session, by id -------------------------------------------------------------------
#
# Flask-Session 0.8 has no public way to look up or delete a session other than
# the current one, but every backend implements ``_get_store_id``,
# ``_retrieve_session_data`` and ``_delete_session`` (``regenerate`` uses them).
# This is the one place that relies on those internals: check it when upgrading.


def _interface() -> Any:
    return current_app.session_interface


def current_sid() -> str:
    """The id of this request's server-side session (Flask-Session sets ``session.sid``)."""
    sid: str = session.sid  # type: ignore[attr-defined]
    return sid


def session_exists(sid: str) -> bool:
    """Whether a session with this id is still in the store (not ended, not expired).

    A stored value that does not decode counts as no session, as it does for
    the browser that presents its cookie.
    """
    interface = _interface()
    return interface._retrieve_session_data(interface._get_store_id(sid)) is not None


def delete_session(sid: str) -> None:
    """Delete a session from the store, so that its cookie opens nothing from now on.

    Its open sockets, on any worker or host, are closed too (1008).
    """
    interface = _interface()
    interface._delete_session(interface._get_store_id(sid))
    revoke_session(sid)


# -- each user's sessions -----------------------------------------------------------------
#
# The store is keyed by session id alone, so nothing in it finds "all of one
# user's sessions". The index keeps, next to the sessions (in Redis, or in the
# same file cache), one map per user from session id to an entry: a small dict
# of msgpack-able values that the caller chooses (accounts keeps device,
# address, started, seen). Entries expire with the longest session lifetime;
# callers prune those whose session has gone (see :func:`session_exists`).

IndexEntry = dict[str, Any]


class _SessionIndex(Protocol):
    def put(self, user_id: int, sid: str, entry: IndexEntry) -> None: ...
    def entries(self, user_id: int) -> dict[str, IndexEntry]: ...
    def entries_with_liveness(self, user_id: int) -> dict[str, tuple[IndexEntry, bool]]: ...
    def remove(self, user_id: int, sid: str) -> None: ...
    def count(self) -> int: ...


class _RedisIndex:
    """One Redis hash per user: session id -> msgpack entry (each field updated atomically)."""

    # The user's index and, for each session in it, whether its key is still in the
    # store: one round trip where HGETALL then MGET took two. The store keys are
    # built from the prefix in the script, so it is not Redis Cluster safe (neither
    # is the socket slot script): a cluster would need the keys in one hash slot.
    _WITH_LIVENESS = """
    local fields = redis.call('HGETALL', KEYS[1])
    local result = {}
    for i = 1, #fields, 2 do
        result[#result + 1] = fields[i]
        result[#result + 1] = fields[i + 1]
        result[#result + 1] = redis.call('EXISTS', ARGV[1] .. fields[i])
    end
    return result
    """

    def __init__(self, client: redis.Redis, prefix: str, lifetime: int, store_prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.lifetime = lifetime
        self.store_prefix = store_prefix
        self._with_liveness = client.register_script(self._WITH_LIVENESS)

    def put(self, user_id: int, sid: str, entry: IndexEntry) -> None:
        key = f"{self.prefix}{user_id}"
        pipe = self.client.pipeline()
        pipe.hset(key, sid, msgspec.msgpack.encode(entry))
        pipe.expire(key, self.lifetime)
        pipe.execute()

    def entries(self, user_id: int) -> dict[str, IndexEntry]:
        # The app's client returns bytes (it is made without decode_responses).
        raw = cast("dict[bytes, bytes]", self.client.hgetall(f"{self.prefix}{user_id}"))
        return {k.decode(): msgspec.msgpack.decode(v) for k, v in raw.items()}

    def entries_with_liveness(self, user_id: int) -> dict[str, tuple[IndexEntry, bool]]:
        flat = self._with_liveness(keys=[f"{self.prefix}{user_id}"], args=[self.store_prefix])
        return {
            flat[i].decode(): (msgspec.msgpack.decode(flat[i + 1]), bool(flat[i + 2]))
            for i in range(0, len(flat), 3)
        }

    def remove(self, user_id: int, sid: str) -> None:
        self.client.hdel(f"{self.prefix}{user_id}", sid)

    def count(self) -> int:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        if not keys:
            return 0
        pipe = self.client.pipeline()
        for key in keys:
            pipe.hlen(key)
        return sum(pipe.execute())


class _CacheIndex:
    """The same in cachelib's file cache: one key per user holding the whole map."""

    # Read-modify-write of a user's map: serialise this process's updates (across
    # apps too, as two apps of one process may share an instance folder).
    _lock = threading.Lock()

    def __init__(
        self, cache: FileSystemCache, prefix: str, lifetime: int, store_prefix: str
    ) -> None:
        self.cache = cache
        self.prefix = prefix
        self.lifetime = lifetime
        self.store_prefix = store_prefix

    def put(self, user_id: int, sid: str, entry: IndexEntry) -> None:
        with self._lock:
            entries = self.entries(user_id)
            entries[sid] = entry
            self._save(user_id, entries)

    def entries(self, user_id: int) -> dict[str, IndexEntry]:
        return dict(self.cache.get(f"{self.prefix}{user_id}") or {})

    def entries_with_liveness(self, user_id: int) -> dict[str, tuple[IndexEntry, bool]]:
        # As EXISTS on Redis: the session's file is there and unexpired (``has`` reads
        # its 4-byte expiry, not the session), on every logged-in request.
        return {
            sid: (entry, self.cache.has(self.store_prefix + sid))
            for sid, entry in self.entries(user_id).items()
        }

    def remove(self, user_id: int, sid: str) -> None:
        with self._lock:
            entries = self.entries(user_id)
            entries.pop(sid, None)
            self._save(user_id, entries)

    def count(self) -> int:
        return sum(len(self.entries(user_id)) for user_id in self._users())

    def _users(self) -> set[int]:
        return set(self.cache.get(self.prefix + "users") or [])

    def _save(self, user_id: int, entries: dict[str, IndexEntry]) -> None:
        self.cache.set(f"{self.prefix}{user_id}", entries, timeout=self.lifetime)
        # cachelib cannot list keys, so the users with sessions are kept in a key of their own.
        users = self._users()
        if entries:
            users.add(user_id)
        else:
            users.discard(user_id)
        self.cache.set(self.prefix + "users", sorted(users), timeout=self.lifetime)


def _index() -> _SessionIndex:
    index: _SessionIndex = current_app.extensions["session_index"]
    return index


def index_put(user_id: int, sid: str, entry: IndexEntry) -> None:
    """Add or replace the user's entry for a session (and renew the user's index expiry)."""
    _index().put(user_id, sid, entry)


def index_entries(user_id: int) -> dict[str, IndexEntry]:
    """The user's indexed sessions: session id -> entry (a copy; may name ended sessions)."""
    return _index().entries(user_id)


def index_entries_with_liveness(user_id: int) -> dict[str, tuple[IndexEntry, bool]]:
    """The user's indexed sessions, each with whether it is still in the store.

    One round trip on Redis, no session read on files. "In the store" means its
    key exists, where :func:`session_exists` also checks that the value decodes: a
    value that does not (only someone writing to the store makes one) is listed as
    open until it expires.
    """
    return _index().entries_with_liveness(user_id)


def index_remove(user_id: int, sid: str) -> None:
    """Drop a session from the user's index; a session not in it is no error."""
    _index().remove(user_id, sid)


def index_count() -> int:
    """Indexed sessions across all users (a scan: for dashboards, not for every request)."""
    return _index().count()
