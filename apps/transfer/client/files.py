"""The client's local files: the file to push, the ``.part`` file a pull fills, the resume cache."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from apps.transfer.blocks import BLOCK_SIZE, HashingThread, fill, fsync_dir
from apps.transfer.client.errors import ClientError, ExitCode, Retry, reason
from apps.transfer.client.progress import Progress
from apps.transfer.names import clean_filename


@dataclass(frozen=True)
class LocalFile:
    """A file to push, with what identifies this version of it."""

    path: Path
    name: str
    size: int
    sha256: str | None  # None: not read yet (the TCP push hashes it while sending)
    identity: tuple[int, ...]  # size, mtime, ctime, inode, device

    @classmethod
    def look(cls, path: Path) -> LocalFile:
        """The file as it is now, without reading it."""
        try:
            identity = _identity(os.stat(path))
        except OSError as exc:
            raise ClientError(f"cannot read {path}: {reason(exc)}") from exc
        return cls(path, clean_filename(path.name), identity[0], None, identity)

    @classmethod
    def measure(cls, path: Path, show_progress: bool) -> LocalFile:
        """Checksum the file, stat taken before and after so a change meanwhile is noticed."""
        with open(path, "rb") as f:
            before = _identity(os.fstat(f.fileno()))
            digest = _hash_stream(f, before[0], f"checksum {path.name}"[:30], show_progress)
            if _identity(os.stat(path)) != before:
                raise Retry(f"{path} changed while it was being checksummed")
        return cls(path, clean_filename(path.name), before[0], digest, before)

    @property
    def version(self) -> str:
        """This version of the file, in 16 hex digits: a changed file has another.

        A PUSH that sends the SHA-256 only after the bytes names the version
        instead, so that the server resumes an upload of this version only.
        """
        return hashlib.sha256(repr(self.identity).encode()).hexdigest()[:16]

    def changed(self) -> bool:
        try:
            return _identity(os.stat(self.path)) != self.identity
        except FileNotFoundError:
            raise ClientError(f"{self.path} was deleted", ExitCode.ERROR) from None


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when the file does; ctime too, which (unlike mtime) cannot be set back."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


class FileDigest:
    """The SHA-256 of a file, read on a thread of its own while the file is being sent.

    Reading and hashing release the GIL, as ``sendfile`` does, so the hash costs
    the sender no time where a second core is free; the file is read once for
    both (the page cache serves the second reader), not hashed first and sent after.
    """

    def __init__(self, path: Path, size: int) -> None:
        self._digest: str | None = None
        self._error: OSError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(path, size), name="transfer-digest", daemon=True
        )
        self._thread.start()

    def _run(self, path: Path, size: int) -> None:
        digest = hashlib.sha256()
        view = memoryview(bytearray(BLOCK_SIZE))
        left = size
        try:
            with open(path, "rb") as f:
                while left and not self._stop.is_set():
                    n = f.readinto(view[: min(BLOCK_SIZE, left)])
                    if not n:
                        break
                    digest.update(view[:n])
                    left -= n
        except OSError as exc:
            self._error = exc
            return
        self._digest = digest.hexdigest()

    def result(self) -> str:
        """The hex digest of the first ``size`` bytes (waits for the thread)."""
        self._thread.join()
        if self._error is not None:
            raise Retry(f"reading the file to hash it failed: {reason(self._error)}")
        assert self._digest is not None
        return self._digest

    def cancel(self) -> None:
        """Stop reading (the send failed: the hash is not needed)."""
        self._stop.set()


def _hash_stream(f: BinaryIO, size: int, label: str, show_progress: bool) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK_SIZE)
    view = memoryview(buffer)
    with tqdm(
        total=size,
        desc=label,
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        disable=not show_progress or size < 64 * BLOCK_SIZE,
        leave=False,
    ) as bar:
        while n := f.readinto(view):  # type: ignore[attr-defined]
            digest.update(view[:n])
            bar.update(n)
    return digest.hexdigest()


class PartFile:
    """``<PATH>.part``: a pull's bytes so far, hashed as they arrive, renamed when verified.

    The hash always covers exactly the bytes in the file: a prefix left by an
    earlier run is hashed first, and each block is written before it is hashed.
    """

    def __init__(self, destination: Path, size: int) -> None:
        self.destination = destination
        self.path = destination.with_name(destination.name + ".part")
        self.size = size
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.file = os.fdopen(fd, "r+b")
        try:
            self.position = os.fstat(fd).st_size
            if self.position > size:  # not a prefix of this file, whatever it is
                self.position = 0
            os.ftruncate(fd, self.position)
            self.hash = HashingThread(self._prefix_hash())
        except BaseException:
            self.file.close()
            raise

    def __enter__(self) -> PartFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self.position == 0:  # nothing worth resuming from
            self.path.unlink(missing_ok=True)

    def _prefix_hash(self) -> Any:
        hasher = hashlib.sha256()
        self.file.seek(0)
        left = self.position
        while left:
            block = self.file.read(min(BLOCK_SIZE, left))
            if not block:
                raise ClientError(f"{self.path} shrank while it was being read")
            hasher.update(block)
            left -= len(block)
        return hasher

    def receive(self, read_into: Callable[[memoryview], int], progress: Progress) -> None:
        """Append bytes from *read_into* until the file is whole (Retry if the stream ends)."""
        while self.position < self.size:
            buffer = self.hash.free.get()
            view = memoryview(buffer)[: min(BLOCK_SIZE, self.size - self.position)]
            filled, failure = fill(read_into, view)
            if filled:
                self._write(view[:filled])
                self.hash.submit(buffer, filled)
                progress.advance(filled)
            else:
                self.hash.free.put(buffer)
            if failure is not None:
                raise Retry(f"connection lost at byte {self.position}: {failure}") from failure
            if filled < len(view):
                raise Retry(f"the server closed the connection at byte {self.position}")

    def _write(self, view: memoryview) -> None:
        try:
            while view:
                written = os.pwrite(self.file.fileno(), view, self.position)
                view, self.position = view[written:], self.position + written
        except OSError as exc:  # a full or failing local disk: no retry will help
            raise ClientError(f"cannot write {self.path}: {reason(exc)}") from exc

    def digest(self) -> str:
        """The SHA-256 of every byte in the file (waits for the hashing thread)."""
        hasher = self.hash.finish()
        digest = hasher.hexdigest()
        self.hash = HashingThread(hasher)  # the file may still grow after a restart
        return str(digest)

    def restart(self) -> None:
        """Forget every byte (a stale prefix): truncate and hash from nothing."""
        self.hash.finish()
        os.ftruncate(self.file.fileno(), 0)
        self.position = 0
        self.hash = HashingThread(hashlib.sha256())

    def commit(self, sha256: str) -> None:
        """Rename into place if the bytes are the file; otherwise delete them.

        Raises:
            ClientError: (CHECKSUM) the bytes do not match.
        """
        digest = self.digest()
        if self.position != self.size or digest != sha256:
            self.close()
            self.path.unlink(missing_ok=True)
            raise ClientError(
                f"the downloaded bytes have SHA-256 {digest}, not the server's {sha256};"
                " nothing was kept",
                ExitCode.CHECKSUM,
            )
        os.fsync(self.file.fileno())
        self.close()
        os.replace(self.path, self.destination)
        fsync_dir(self.destination.parent)

    def close(self) -> None:
        self.hash.finish()
        self.file.close()


class ResumeCache:
    """Upload URLs of unfinished tus pushes, so a later run picks up where one stopped.

    Keyed by server, key id, and the file's name, size and SHA-256 (a changed
    file is a new key). Only URLs are kept, never a key's secret.
    """

    def __init__(self) -> None:
        root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        self.path = Path(root) / "flaskmono" / "tus-uploads.json"

    @staticmethod
    def key(base: str, key_id: str, local: LocalFile) -> str:
        return f"{base}|{key_id}|{local.name}|{local.size}|{local.sha256}"

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: start afresh
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, str]) -> None:
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs a resume
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(data, indent=1))
            os.replace(temporary, self.path)

    def get(self, key: str) -> str | None:
        return self._load().get(key)

    def put(self, key: str, url: str) -> None:
        self._save({**self._load(), key: url})

    def forget(self, key: str) -> None:
        data = self._load()
        if data.pop(key, None) is not None:
            self._save(data)
