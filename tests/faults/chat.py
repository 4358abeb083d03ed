"""A chat room member in a thread, behaving as a careful client does across faults.

:class:`ChatMember` speaks ``apps/realtime/PROTOCOL.md`` with the ``websockets``
sync client. It sends one message at a time, each with a unique ``client_id``
(also written into the body, so a message can be recognised in a ``welcome`` or
``history`` frame even when the server does not echo ``client_id`` there):

* a ``message`` frame of its own carrying the ``client_id`` in flight: **accepted**;
* an ``error`` frame with code ``unavailable`` (or ``rate_limited``): wait
  ``retry_after`` seconds and send it again with the **same** ``client_id``;
* the socket drops: reconnect (backoff 0.25 s doubling to 2 s) with
  ``?after=<highest id seen>`` and send the pending message again, same ``client_id``;
* no answer at all within ``answer_timeout`` while the socket stays open: count it
  and send again.

Every send that got neither its echo nor an error before the socket dropped (or
the timeout struck) counts in ``unanswered``. The member's **view** is every
message of its ``welcome`` and ``history`` frames and every live ``message``
frame, across reconnects, merged by id: what a page would show.

A handshake answered 401 (the session ended) logs the user in again through its
:class:`~tests.faults.accounts.Account`, as the page would send them to the login form.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.faults.accounts import Account, LoginFailed

CLIENT_ID = re.compile(r"\[(?P<id>[0-9a-f]{32})\]")


def client_id_of(message: dict[str, Any]) -> str | None:
    """The client_id of a message frame: echoed by the server, or read from the body."""
    echoed = message.get("client_id")
    if isinstance(echoed, str):
        return echoed
    match = CLIENT_ID.search(str(message.get("body", "")))
    return match["id"] if match else None


@dataclass
class Pending:
    client_id: str
    body: str
    sent_at: float = 0.0  # of the current attempt; 0: not sent on this socket yet
    attempts: int = 0
    not_before: float = 0.0  # an error frame asked to wait until then


@dataclass
class Handshake:
    at: float
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    retry_after: str | None = None
    error: str | None = None


@dataclass
class Stats:
    sent: int = 0  # send attempts (resends included)
    accepted: dict[str, int] = field(default_factory=dict)  # client_id -> message id
    unanswered: int = 0  # attempts that got neither the echo nor an error
    timed_out: int = 0  # of which on a socket that stayed open (answer_timeout passed)
    disconnects: int = 0
    close_codes: list[int | None] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # error frames received
    handshakes: list[Handshake] = field(default_factory=list)  # failed handshakes
    latencies: list[float] = field(default_factory=list)  # send to echo, accepted attempts


class ChatMember(threading.Thread):
    """*account* in room *room* at *ws_base*; sends a message every *interval* s while asked."""

    def __init__(
        self,
        account: Account,
        ws_base: str,
        room: str,
        *,
        interval: float = 0.3,
        answer_timeout: float = 10.0,
    ) -> None:
        super().__init__(name=f"chat-{account.username}", daemon=True)
        self.account, self.ws_base, self.room = account, ws_base, room
        self.interval, self.answer_timeout = interval, answer_timeout
        self.view: dict[int, dict[str, Any]] = {}  # message id -> message
        self.stats = Stats()
        self.connected = threading.Event()  # set while a socket is open and welcomed
        self._sending = threading.Event()
        self._halt = threading.Event()
        self._pending: Pending | None = None
        self._next_send = 0.0
        self._count = 0
        self.failure: BaseException | None = None
        self.local_port: int | None = None  # this end of the open socket (to find its worker)

    # -- control --------------------------------------------------------------------------------

    def start_sending(self) -> None:
        self._sending.set()

    def stop_sending(self) -> None:
        self._sending.clear()

    @property
    def idle(self) -> bool:
        """Nothing in flight or waiting to be sent again."""
        return self._pending is None

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)

    # -- what the checks read -------------------------------------------------------------------

    def seen_client_ids(self) -> set[str]:
        return {cid for m in self.view.values() if (cid := client_id_of(m))}

    @property
    def last_id(self) -> int:
        return max(self.view, default=0)

    # -- the thread -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test, never swallowed
            self.failure = exc

    def _run(self) -> None:
        backoff = 0.25
        while not self._halt.is_set():
            if self._session():
                backoff = 0.25
                self._halt.wait(0.1)
            else:
                self._halt.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def _session(self) -> bool:
        """One socket, from the handshake until it drops; False if it never got a welcome."""
        url = f"{self.ws_base}/ws/rooms/{self.room}"
        if self.view:
            url += f"?after={self.last_id}"
        cookie = self.account.cookie
        welcomed = False
        try:
            with connect(
                url,
                additional_headers={"Cookie": cookie},
                open_timeout=10,
                close_timeout=3,
                max_size=2**22,
            ) as ws:
                try:
                    welcome = self._receive_welcome(ws)
                except (ConnectionClosed, OSError, TimeoutError) as exc:
                    self.stats.handshakes.append(
                        Handshake(time.monotonic(), 101, error=f"no welcome: {exc!r}")
                    )
                    return False
                welcomed = True
                self._merge(welcome.get("messages", []))
                self.local_port = ws.local_address[1]
                self.connected.set()
                self._converse(ws)
                return True  # asked to stop
        except InvalidStatus as exc:
            self._refused(exc.response.status_code, exc.response.headers.get("Retry-After"), cookie)
            return False
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            if not welcomed:
                self.stats.handshakes.append(Handshake(time.monotonic(), None, error=repr(exc)))
                return False
            self.stats.close_codes.append(None)
            self.stats.errors.append({"type": "socket", "error": repr(exc)})
        except ConnectionClosed as exc:
            self.stats.close_codes.append(exc.rcvd.code if exc.rcvd else None)
        self._dropped()
        return True

    def _refused(self, status: int, retry_after: str | None, cookie: str) -> None:
        """A handshake answered *status*: log in again (401) or wait (503)."""
        self.stats.handshakes.append(Handshake(time.monotonic(), status, retry_after))
        if status == 401:
            with contextlib.suppress(LoginFailed, requests.RequestException):
                self.account.relogin(cookie, deadline=time.monotonic() + 2)
        elif status == 503:
            with contextlib.suppress(ValueError):
                self._halt.wait(min(float(retry_after or "1"), 5))

    def _dropped(self) -> None:
        self.connected.clear()
        self.stats.disconnects += 1
        if self._pending is not None and self._pending.sent_at:
            self.stats.unanswered += 1  # in flight when the socket dropped
            self._pending.sent_at = 0.0  # send again on the next socket

    def _receive_welcome(self, ws: ClientConnection) -> dict[str, Any]:
        while True:
            frame = json.loads(ws.recv(timeout=10))
            if frame.get("type") == "welcome":
                return frame  # type: ignore[no-any-return]
            self._on_frame(frame)

    def _converse(self, ws: ClientConnection) -> None:
        while not self._halt.is_set():
            now = time.monotonic()
            pending = self._pending
            if pending is None and self._sending.is_set() and now >= self._next_send:
                self._count += 1
                cid = uuid.uuid4().hex
                body = f"{self.account.username} #{self._count} [{cid}]"
                pending = self._pending = Pending(cid, body)
                self._next_send = now + self.interval
            if pending is not None:
                if pending.sent_at and now - pending.sent_at > self.answer_timeout:
                    self.stats.unanswered += 1  # no answer on an open socket: try again
                    self.stats.timed_out += 1
                    pending.sent_at = 0.0
                if not pending.sent_at and now >= pending.not_before:
                    pending.sent_at = now
                    pending.attempts += 1
                    self.stats.sent += 1
                    ws.send(
                        json.dumps(
                            {
                                "type": "message",
                                "body": pending.body,
                                "client_id": pending.client_id,
                            }
                        )
                    )
            try:
                raw = ws.recv(timeout=0.05)
            except TimeoutError:
                continue
            self._on_frame(json.loads(raw))

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            self._merge([frame])
            pending = self._pending
            if (
                pending is not None
                and frame.get("user") == self.account.username
                and frame.get("client_id") == pending.client_id
            ):
                self.stats.accepted[pending.client_id] = int(frame["id"])
                if pending.sent_at:
                    self.stats.latencies.append(time.monotonic() - pending.sent_at)
                self._pending = None
        elif kind in ("welcome", "history"):
            self._merge(frame.get("messages", []))
        elif kind == "error":
            self.stats.errors.append(frame)
            pending = self._pending
            if pending is None or frame.get("client_id") not in (None, pending.client_id):
                return
            if frame.get("code") in ("unavailable", "rate_limited"):
                wait = float(frame.get("retry_after") or 1)
                pending.sent_at = 0.0
                pending.not_before = time.monotonic() + min(wait, 10)
            else:  # refused for good: the checks report it (bad_request, too_long)
                self._pending = None

    def _merge(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            self.view.setdefault(int(message["id"]), message)
