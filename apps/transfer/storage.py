"""Bytes on disk: unfinished uploads, finished files, and the one way from one to the other.

Layout under ``MEDIA_ROOT/transfer/``::

    partial/<id>.part     an upload's bytes so far (its length is the row's ``received``)
    files/<id[:2]>/<id>   a finished, verified file

Names on disk are the random ids, never what the user called the file. An
upload becomes a file in one step: its last chunk is written and fsynced, the
whole file's SHA-256 is checked against what the client declared (if it did),
then the partial file is renamed into ``files/`` and the directory fsynced.
A reader therefore sees a whole verified file or none.

:func:`receive` is the only writer, shared by the tus server and the TCP fast
path. It holds an exclusive ``flock`` on the partial file while it writes, so
two requests for one upload (from any worker on the host, or any host sharing
the volume, where the filesystem honours ``flock``) cannot interleave: the
second gets ``UploadBusy``. The database row, read again under the lock,
says where the next byte goes; bytes past it on disk (a write torn by a
crash) are cut off first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from flask import current_app

from apps.transfer import events, models
from apps.transfer.blocks import BLOCK_SIZE, HashingThread, Reader, fill, fsync_dir
from apps.transfer.exceptions import (
    ChecksumMismatch,
    FileCorrupt,
    OffsetMismatch,
    QuotaExceeded,
    StorageFull,
    UploadBusy,
    UploadExpired,
    UploadGone,
    UploadTooLong,
)
from apps.transfer.models import TransferFile
from project import shared_files
from project.db import utcnow
from project.extensions import db

CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5")  # what tus clients may send per chunk
_FULL_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Users' files are readable by the server's user and group only (the umask may take more).
FILE_MODE = 0o640
DIR_MODE = 0o750


@dataclass(frozen=True)
class Storage:
    root: Path

    def partial_path(self, file_id: str) -> Path:
        return self.root / "partial" / f"{file_id}.part"

    def file_path(self, file_id: str) -> Path:
        return self.root / "files" / file_id[:2] / file_id


def get_storage() -> Storage:
    return Storage(Path(current_app.config["MEDIA_ROOT"]) / "transfer")


# -- starting, finding and removing ------------------------------------------------


def start_upload(
    owner_id: int,
    *,
    filename: str,
    size: int,
    content_type: str = "application/octet-stream",
    metadata: str = "",
    expected_sha256: str | None = None,
) -> TransferFile:
    """Create the row and the empty partial file of a new upload.

    Raises:
        QuotaExceeded: the owner's quota has no room for *size* bytes.
        UploadTooLong: *size* is over ``TRANSFER_MAX_FILE_SIZE``.
    """
    config = current_app.config
    try:
        if size > config["TRANSFER_MAX_FILE_SIZE"]:
            raise UploadTooLong(
                f"files may be at most {config['TRANSFER_MAX_FILE_SIZE']} bytes; this one is {size}"
            )
        upload = models.create(
            owner_id,
            filename=filename,
            content_type=content_type,
            size=size,
            metadata=metadata,
            expected_sha256=expected_sha256,
            quota=config["TRANSFER_USER_QUOTA"],
            expiry_seconds=config["TRANSFER_UPLOAD_EXPIRY"],
        )
    except (UploadTooLong, QuotaExceeded) as exc:  # refused for good: the owner's pages hear it
        events.failed(owner_id, None, exc, filename)
        raise
    storage = get_storage()
    path = storage.partial_path(upload.id)
    try:
        make_dirs(path.parent)
        path.touch(mode=FILE_MODE, exist_ok=False)
    except OSError as exc:
        models.delete(upload.id)
        if exc.errno in _FULL_DISK:
            raise StorageFull("the server's disk is full") from exc
        raise
    return upload


def make_dirs(path: Path) -> None:
    """*path* and its missing parents, each private to the server's user and group.

    (``Path.mkdir(mode, parents=True)`` gives the parents the default mode.)
    """
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another worker made it meanwhile
            directory.mkdir(mode=DIR_MODE)


def remove(file: TransferFile) -> None:
    """Delete a file or an unfinished upload: its bytes first, then its row."""
    storage = get_storage()
    for path in (storage.partial_path(file.id), storage.file_path(file.id)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    _hashes.forget(file.id)
    models.delete(file.id)
    shared_files.deleted(file.id)  # messages that carried it show it as removed


def open_file(file: TransferFile) -> BinaryIO:
    """The finished file, open for reading (raises FileNotFoundError if it is gone)."""
    return open(get_storage().file_path(file.id), "rb")  # noqa: SIM115 (the caller closes it)


# -- writing -------------------------------------------------------------------------


class _Hashes:
    """The running SHA-256 of unfinished uploads, kept between chunks in this process.

    A chunk that continues where this process's last chunk of the same upload
    ended picks up the running hash; otherwise (another worker took the last
    one, or a restart) the bytes so far are hashed again from disk.
    """

    def __init__(self, size: int = 64) -> None:
        self._items: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def take(self, file_id: str, offset: int) -> Any | None:
        with self._lock:
            item = self._items.pop(file_id, None)
        return item[1] if item and item[0] == offset else None

    def put(self, file_id: str, offset: int, hasher: Any) -> None:
        with self._lock:
            self._items[file_id] = (offset, hasher)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def forget(self, file_id: str) -> None:
        with self._lock:
            self._items.pop(file_id, None)


_hashes = _Hashes()


class _NoHash:
    """Stands for the running hash of an upload whose whole-file hash is deferred."""

    def update(self, data: object) -> None:
        """Nothing: the bytes are hashed once, from disk, when the upload completes."""


def _hash_prefix(fd: int, length: int) -> Any:
    hasher = hashlib.sha256()
    buffer = bytearray(BLOCK_SIZE)
    view = memoryview(buffer)
    position = 0
    while position < length:
        n = os.preadv(fd, [view[: min(BLOCK_SIZE, length - position)]], position)
        if n == 0:
            raise UploadGone("the upload's bytes on disk are shorter than recorded")
        hasher.update(view[:n])
        position += n
    return hasher


@contextlib.contextmanager
def _locked(file_id: str) -> Iterator[int]:
    path = get_storage().partial_path(file_id)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise UploadGone("this upload no longer exists") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UploadBusy("another request is writing to this upload; retry shortly") from None
        yield fd
    finally:
        os.close(fd)  # releases the lock


def receive(
    upload: TransferFile,
    offset: int,
    reader: Reader,
    *,
    checksum: tuple[str, bytes] | None = None,
    declared_after: Callable[[], str] | None = None,
) -> TransferFile:
    """Append the bytes *reader* gives, at *offset*, to an unfinished upload.

    *declared_after* is for an upload whose SHA-256 the client declares only
    after the last byte (the TCP PUSH trailer): it is called once every byte
    is on disk, and what it returns is checked like a SHA-256 declared up front.

    With *checksum* (algorithm, digest) the chunk is kept only if it matches
    (``ChecksumMismatch`` otherwise). Without one, a client that vanishes
    mid-chunk keeps what arrived, so it can resume from there; its error is
    raised again after the bytes are safe on disk. When the last byte arrives
    the upload is verified and becomes a file (see the module docstring).

    Returns:
        The upload as it now stands (``complete`` once finished).

    Raises:
        UploadGone, UploadExpired, UploadBusy, OffsetMismatch, UploadTooLong,
        ChecksumMismatch, FileCorrupt, StorageFull; or the reader's own error.
    """
    with _locked(upload.id) as fd:
        current = models.get(upload.id)
        if current is None:
            raise UploadGone("this upload no longer exists")
        if current.complete:
            raise OffsetMismatch(current.size, offset)
        if current.expired():
            expired = UploadExpired("this upload has expired; start again")
            events.failed(current.owner_id, current.id, expired)
            raise expired
        if current.received != offset:
            raise OffsetMismatch(current.received, offset)
        os.ftruncate(fd, offset)  # a write torn by a crash leaves bytes past `received`
        # The bytes may take hours to arrive: give the pooled database connection
        # back meanwhile (the next query borrows one again), so stalled clients
        # cannot starve every other request of connections.
        db.release()

        # The running SHA-256 is kept in this process between chunks. Without it (the
        # chunk landed on another worker, or the state was evicted) the prefix is not
        # hashed again now: a 1-byte chunk would cost a pass over up to 50 GiB each
        # time. The whole file is hashed once at completion instead, so an upload
        # costs at most two passes over its bytes whichever worker takes which chunk.
        state = _hashes.take(upload.id, offset)
        deferred = state is None and offset > 0
        hasher = state or (_NoHash() if deferred else hashlib.sha256())
        pipeline = HashingThread(hasher)
        chunk_hash = hashlib.new(checksum[0]) if checksum else None
        remaining = current.size - offset
        position = reported = offset  # reported: the offset the owner's pages were last told
        failure: BaseException | None = None
        try:
            while True:
                buffer = pipeline.free.get()
                view = memoryview(buffer)
                # One byte more than fits tells a body that runs past Upload-Length.
                limit = min(len(view), remaining - (position - offset) + 1)
                filled, failure = fill(reader, view[:limit])
                if position - offset + filled > remaining:
                    raise UploadTooLong(
                        f"the body runs past the upload's length of {current.size} bytes"
                    )
                if filled:
                    _write_all(fd, view[:filled], position)
                    position += filled
                    if chunk_hash is not None:
                        chunk_hash.update(view[:filled])
                    else:  # a checksummed chunk's bytes count once it is verified
                        events.progress(current, position)
                        reported = position
                pipeline.submit(buffer, filled)
                if failure is not None or filled < limit:
                    break
            if failure is not None and chunk_hash is not None:
                raise failure  # an unverifiable partial chunk is not kept
            if chunk_hash is not None and chunk_hash.digest() != checksum[1]:  # type: ignore[index]
                raise ChecksumMismatch(
                    f"the chunk's {checksum[0]} does not match Upload-Checksum; it was discarded"  # type: ignore[index]
                )
            os.fsync(fd)
        except BaseException:
            pipeline.finish()
            os.ftruncate(fd, offset)  # nothing of this chunk is kept
            if reported != offset:
                events.progress(current, offset)  # the pages were told of bytes now gone
            raise
        hasher = pipeline.finish()
        models.record_progress(upload.id, position, current_app.config["TRANSFER_UPLOAD_EXPIRY"])
        if position < current.size:
            if reported != position:  # a checksummed chunk, verified now
                events.progress(current, position)
            if not deferred:  # a hash of this chunk alone is no state to resume from
                _hashes.put(upload.id, position, hasher)
            if failure is not None:
                raise failure
            return models.get(upload.id) or current
        if declared_after is not None:
            current = dataclasses.replace(current, expected_sha256=declared_after())
        _finish(current, _hash_prefix(fd, position).hexdigest() if deferred else hasher.hexdigest())
    finished = models.get(upload.id)
    assert finished is not None
    events.complete(finished)
    return finished


def _write_all(fd: int, view: memoryview, position: int) -> None:
    try:
        while view:
            written = os.pwrite(fd, view, position)
            view, position = view[written:], position + written
    except OSError as exc:
        if exc.errno in _FULL_DISK:
            raise StorageFull("the server's disk is full; the chunk was not kept") from exc
        raise


def _finish(upload: TransferFile, sha256: str) -> None:
    """Verify the whole file and move it into place; a mismatch deletes the upload."""
    if upload.expected_sha256 and upload.expected_sha256 != sha256:
        remove(upload)
        corrupt = FileCorrupt(
            f"the file's SHA-256 is {sha256}, not the {upload.expected_sha256} the client"
            " declared; the upload was deleted"
        )
        events.failed(upload.owner_id, upload.id, corrupt)
        raise corrupt
    storage = get_storage()
    final = storage.file_path(upload.id)
    make_dirs(final.parent)
    os.replace(storage.partial_path(upload.id), final)
    fsync_dir(final.parent)
    fsync_dir(storage.partial_path(upload.id).parent)
    models.mark_complete(upload.id, sha256)


def settle(upload: TransferFile) -> TransferFile:
    """Finish an upload whose verified file was moved into place just before a crash.

    :func:`_finish` renames first and records second; a crash in between leaves
    a row with every byte received, no partial file and the file in place. The
    rename happens only after verification, so the file is good: record it.
    """
    storage = get_storage()
    final = storage.file_path(upload.id)
    if upload.complete or upload.received != upload.size or not final.exists():
        return upload
    if storage.partial_path(upload.id).exists():
        return upload
    with open(final, "rb") as f:
        models.mark_complete(upload.id, _hash_prefix(f.fileno(), upload.size).hexdigest())
    settled = models.get(upload.id)
    if settled is None:
        return upload
    events.complete(settled)
    return settled


# -- cleaning up -------------------------------------------------------------------


@dataclass(frozen=True)
class CleanupReport:
    expired_uploads: int
    orphan_files: int
    dead_shares: int


def cleanup() -> CleanupReport:
    """Delete expired uploads, bytes on disk that no row owns, and dead share links.

    A partial file is left alone while another request holds its lock.
    """
    now = utcnow()
    expired = 0
    for upload in models.expired_uploads(now):
        if settle(upload).complete:
            continue
        try:
            with _locked(upload.id):
                remove(upload)
        except UploadGone:
            models.delete(upload.id)
        except UploadBusy:
            continue
        expired += 1
        gone = UploadExpired("this upload expired unfinished and was deleted; start again")
        events.failed(upload.owner_id, upload.id, gone)
    storage = get_storage()
    # Listed before the rows are read: a row is inserted before its partial file
    # is created, so every file listed here that is still wanted has a row below.
    on_disk = [*storage.root.glob("partial/*.part"), *storage.root.glob("files/*/*")]
    known = models.all_ids()
    orphans = 0
    for path in on_disk:
        if path.name.removesuffix(".part") not in known:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                orphans += 1
    return CleanupReport(expired, orphans, models.delete_dead_shares(now))
