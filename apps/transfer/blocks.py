"""Moving bytes in large blocks: what the server's storage and the CLI's client share.

No Flask here: the client runs on machines where there is no app.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

BLOCK_SIZE = 1 << 20  # bytes per read, write and hash update: few syscalls, few GIL hops

Reader = Callable[[memoryview], int]  # fills the view like readinto(); 0 means end of input


def fill(reader: Reader, view: memoryview) -> tuple[int, Exception | None]:
    """Read until *view* is full or the input ends; an error comes back with the count so far.

    The count matters even on an error: those bytes arrived and can be kept,
    so a transfer resumes after them rather than before.
    """
    filled = 0
    try:
        while filled < len(view):
            n = reader(view[filled:])
            if not n:
                break
            filled += n
    except Exception as exc:  # the peer vanished, timed out, or sent a broken body
        return filled, exc
    return filled, None


def fsync_dir(path: Path) -> None:
    """Make a rename in *path* durable (fsync of the file alone does not cover its name)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HashingThread:
    """Feeds filled buffers to a hash on a second thread while the first fills the next.

    hashlib releases the GIL on buffers over 2 KiB, so receiving and hashing
    overlap. Buffers come from a small pool (:attr:`free`) and return to it
    once hashed, so a long transfer allocates nothing per block.
    """

    def __init__(self, hasher: Any, buffers: int = 4) -> None:
        self.hasher = hasher
        self.free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(buffers):
            self.free.put(bytearray(BLOCK_SIZE))
        self._work: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="transfer-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            buffer, length = item
            try:
                self.hasher.update(memoryview(buffer)[:length])
            finally:
                self.free.put(buffer)

    def submit(self, buffer: bytearray, length: int) -> None:
        """Hash the first *length* bytes of a buffer taken from :attr:`free`, then free it."""
        self._work.put((buffer, length))

    def finish(self) -> Any:
        """Wait for the queued blocks; returns the hash object."""
        if self._thread.is_alive():
            self._work.put(None)
            self._thread.join()
        return self.hasher
