"""A chat room over one WebSocket: the JSON messages of PROTOCOL.md, one connection's side.

The socket subscribes to its room before reading history, so nothing sent in
between is lost (a client drops duplicates by id). Each database use gives
its connection back to the pool at once: a socket may stay open for hours
and must not hold a pooled connection all that time.

A message is stored, then announced (the database is the source of truth).
When the database or Redis is down a frame gets an ``unavailable`` error with
``retry_after`` and the socket stays open; the client resends with the same
``client_id``, which finds the stored message rather than storing a twin.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from typing import Any

from flask import current_app
from limits import parse

from apps.realtime import models
from project import shared_files
from project.broker import get_broker
from project.db import IntegrityError
from project.extensions import db, limiter
from project.outages import OUTAGES, RETRY_AFTER, log_outage
from project.shared_files import SharedFile
from project.websocket import ConnectionClosed, PreparedText, WebSocket

FILE_ID = re.compile(r"^[0-9a-f]{32}\Z")  # a transfer file's id (PROTOCOL.md)
MISSED_LIMIT = 500  # messages sent to a reconnecting client at most; older ones on scroll


def _error(code: str, message: str, **extra: Any) -> str:
    return json.dumps({"type": "error", "code": code, "message": message, **extra})


class _RoomFeed:
    """The room's frames for one socket, held back until its ``welcome`` has gone out.

    Presence frames are deltas on top of the welcome's ``online`` list, so none
    may reach the client before it; the ones that arrive meanwhile are sent
    right after it, in order (applied again, they leave the list as it was).
    """

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._lock = threading.Lock()
        self._held: list[PreparedText] | None = []

    def __call__(self, message: PreparedText) -> None:
        with self._lock:
            if self._held is not None:
                self._held.append(message)
                return
        self._send(message)

    def welcome(self, payload: str) -> None:
        """Send the welcome, then what the room sent meanwhile; live from now on."""
        self.ws.send(payload)
        while True:
            with self._lock:
                held, self._held = self._held, [] if self._held else None
            if not held:
                return
            for message in held:
                self._send(message)

    def _send(self, message: PreparedText) -> None:
        with contextlib.suppress(ConnectionClosed):  # the reader notices and cleans up
            self.ws.send(message)


def run_room(ws: WebSocket, room: models.Room, user: Any, after: int | None) -> None:
    """Serve one member of a room until the socket closes."""
    broker = get_broker()
    connection = uuid.uuid4().hex
    feed = _RoomFeed(ws)
    unsubscribe = broker.subscribe(room.name, feed)
    try:
        models.join(room.id, user.id)  # a member from now on: files posted here are for them
        online = broker.join(room.name, connection, user.username)
        feed.welcome(json.dumps(_welcome(room, user, after, online)))
        db.release()
        for raw in ws:
            reply = handle(raw, room, user)
            db.release()
            if reply is not None:
                ws.send(reply)
    finally:
        unsubscribe()
        broker.leave(room.name, connection)
        db.release()


def _welcome(room: models.Room, user: Any, after: int | None, online: list[str]) -> dict[str, Any]:
    limit = current_app.config["CHAT_HISTORY"]
    if after is not None:
        messages = models.messages_after(room.id, after, MISSED_LIMIT)
        has_more = False
    else:
        messages = models.recent_messages(room.id, limit)
        has_more = len(messages) == limit
    return {
        "type": "welcome",
        "room": room.name,
        "user": user.username,
        "online": online,
        "messages": [m.as_json() for m in messages],
        "has_more": has_more,
    }


def handle(raw: str | bytes, room: models.Room, user: Any) -> str | None:
    """Act on one client frame; returns a reply for this client only, if any."""
    if isinstance(raw, bytes):
        return _error("bad_request", "send JSON text frames")
    try:
        data = json.loads(raw)
    except ValueError:
        return _error("bad_request", "not valid JSON")
    if not isinstance(data, dict):
        return _error("bad_request", "expected a JSON object")
    try:
        return _act(data, room, user)
    except OUTAGES as exc:
        log_outage(exc, "handling a chat frame")
        extra = {"client_id": data["client_id"]} if "client_id" in data else {}
        message = f"the chat is unavailable; try again in {RETRY_AFTER} s"
        return _error("unavailable", message, retry_after=RETRY_AFTER, **extra)


def _act(data: dict[str, Any], room: models.Room, user: Any) -> str | None:
    kind = data.get("type")
    if kind == "message":
        return _post(data, room, user)
    if kind == "delete":
        return _delete(data, room, user)
    if kind == "history":
        before = data.get("before")
        if not isinstance(before, int) or isinstance(before, bool):
            return _error("bad_request", "history needs an integer 'before'")
        # Each request costs a query and up to CHAT_HISTORY messages back: it counts
        # against the same allowance as posting, or 40 bytes in buy 100 KB out, forever.
        refused = _over_chat_limit(user)
        if refused is not None:
            return refused
        limit = current_app.config["CHAT_HISTORY"]
        older = models.recent_messages(room.id, limit, before=before)
        return json.dumps(
            {
                "type": "history",
                "messages": [m.as_json() for m in older],
                "has_more": len(older) == limit,
            }
        )
    return _error("bad_request", f"unknown message type {kind!r}")


def _over_chat_limit(user: Any, **extra: Any) -> str | None:
    """Take one from the user's CHAT_RATE_LIMIT allowance; the error frame when none is left."""
    rule = parse(current_app.config["CHAT_RATE_LIMIT"])
    try:
        if limiter.limiter.hit(rule, "chat", str(user.id)):
            return None
    except OUTAGES as exc:
        # The counts live in Redis. While it is down the chat keeps going on the
        # database alone: one signed-in user can post unmetered for that while.
        log_outage(exc, "counting chat messages")
        return None
    reset_at, _ = limiter.limiter.get_window_stats(rule, "chat", str(user.id))
    wait = max(1, int(reset_at - time.time()) + 1)
    return _error("rate_limited", f"slow down: try again in {wait} s", retry_after=wait, **extra)


def _attached_file(value: Any, user: Any) -> tuple[SharedFile | None, str | None]:
    """The sender's own finished file a message names in ``file``, or the refusal's text."""
    file_id = value.get("id") if isinstance(value, dict) else value
    if not isinstance(file_id, str) or not FILE_ID.match(file_id):
        return None, "'file' is the id of one of your files (32 hex digits), or {\"id\": ...}"
    file = shared_files.describe(user.id, file_id)
    if file is None:
        return None, "no finished file of yours has that id"
    return file, None


def _post(data: dict[str, Any], room: models.Room, user: Any) -> str | None:
    body = data.get("body", "" if data.get("file") is not None else None)
    client_id = data.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= 64):
        return _error("bad_request", "'client_id' is a string of 1 to 64 characters")
    file = None
    if data.get("file") is not None:
        file, problem = _attached_file(data["file"], user)
        if problem is not None:
            return _error("no_such_file", problem, client_id=client_id)
    if not isinstance(body, str) or not (body.strip() or file):
        return _error("bad_request", "a message needs a non-empty 'body'", client_id=client_id)
    body = body.strip()
    maximum = current_app.config["CHAT_MESSAGE_MAX_LENGTH"]
    if len(body) > maximum:
        return _error("too_long", f"messages are at most {maximum} characters", client_id=client_id)
    refused = _over_chat_limit(user, client_id=client_id)
    if refused is not None:
        return refused
    try:
        message, _ = models.add_message(room.id, user.id, user.username, body, client_id, file)
    except IntegrityError:
        return _error("bad_request", "this 'client_id' names another message", client_id=client_id)
    # A resend is announced again too: the first announcement may be what was lost.
    get_broker().publish(room.name, json.dumps(message.as_json()))
    return None


def _delete(data: dict[str, Any], room: models.Room, user: Any) -> str | None:
    """Delete one of your messages: gone for everyone, and so is any file's access through it."""
    message_id = data.get("id")
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        return _error("bad_request", "delete needs an integer 'id'")
    refused = _over_chat_limit(user)
    if refused is not None:
        return refused
    if not models.delete_message(room.id, message_id, user.id):
        return _error("not_found", "you have no message with that id in this room", id=message_id)
    get_broker().publish(room.name, json.dumps({"type": "deleted", "id": message_id}))
    return None
