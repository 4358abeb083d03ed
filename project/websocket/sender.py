"""A socket's outgoing bytes, written without ever blocking whoever sends.

A room's fan-out hands each message to every socket in the room from one
thread; if writing to one socket could block (a peer that stopped reading,
its receive window full), every socket after it in the room would wait too.
So a write goes out at once only when the kernel has room for it (``poll``
says the socket is writable); otherwise it joins this socket's queue, which
a writer thread of its own (a greenlet under gevent) drains. The queue is
bounded (``WEBSOCKET_MAX_QUEUE`` bytes): a peer that falls further behind
than that is dropped, and its client reconnects and catches up by id.
"""

from __future__ import annotations

import select
import socket
import threading
from collections import deque


def writable_now(sock: socket.socket) -> bool:
    """Whether a send() would not block (the kernel has room in the send buffer)."""
    poll = getattr(select, "poll", None)  # gevent removes it; its select has no fd limit
    if poll is None:
        return bool(select.select([], [sock], [], 0)[1])
    poller = poll()
    poller.register(sock, select.POLLOUT)
    return bool(poller.poll(0))


class Sender:
    """Ordered, non-blocking writes to one socket, with a bounded queue.

    Args:
        sock: the connected socket (its timeout bounds the writer's blocking writes).
        max_queue: bytes that may wait to be written; :meth:`write` refuses past it.
    """

    def __init__(self, sock: socket.socket, max_queue: int) -> None:
        self.sock = sock
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._queue: deque[bytes | memoryview] = deque()
        self._queued = 0  # bytes in _queue plus the chunk being written
        self._writing = False  # the writer is inside sendall(), outside the lock
        self._writer: threading.Thread | None = None
        self._stopping = False
        self.failed = False  # the socket refused a write: the peer is gone

    @property
    def pending(self) -> int:
        """Bytes not yet handed to the kernel."""
        return self._queued

    def write(self, data: bytes, *, force: bool = False) -> bool:
        """Write *data* after everything written before it.

        Returns False, writing nothing, when the socket has failed or when a
        backlog would grow past ``max_queue`` (unless *force*: a close frame).
        """
        with self._cond:
            if self.failed or self._stopping:
                return False
            view: bytes | memoryview = data
            if not self._queue and not self._writing:
                try:
                    if writable_now(self.sock):
                        sent = self.sock.send(data)
                        if sent == len(data):
                            return True
                        view = memoryview(data)[sent:]
                except OSError:
                    self.failed = True
                    return False
            # The bound is on backlog: one message of any size (at most the app's own
            # message limit) may always wait; another past the bound behind it may not.
            if not force and self._queued and self._queued + len(view) > self.max_queue:
                return False
            self._queue.append(view)
            self._queued += len(view)
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, name="ws-writer", daemon=True)
                self._writer.start()
            self._cond.notify_all()
            return True

    def discard_queued(self) -> None:
        """Drop what has not started to go out (a chunk half written is finished first)."""
        with self._cond:
            dropped = sum(len(chunk) for chunk in self._queue)
            self._queue.clear()
            self._queued -= dropped

    def wait_written(self, timeout: float) -> bool:
        """Wait until everything queued is handed to the kernel; False on timeout or failure."""
        with self._cond:
            self._cond.wait_for(
                lambda: self.failed or (not self._queue and not self._writing), timeout
            )
            return not self.failed and not self._queue and not self._writing

    def drain(self, timeout: float) -> bool:
        """:meth:`wait_written`, then stop the writer: nothing more will be written."""
        done = self.wait_written(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        return done

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if not self._queue:
                    self._writer = None
                    return
                chunk = self._queue.popleft()
                self._writing = True
            try:
                self.sock.sendall(chunk)
            except OSError:  # the peer is gone, or did not read for the socket's timeout
                with self._cond:
                    self.failed = True
                    self._queue.clear()
                    self._queued = 0
                    self._writing = False
                    self._writer = None
                    self._cond.notify_all()
                return
            with self._cond:
                self._queued -= len(chunk)
                self._writing = False
                self._cond.notify_all()
