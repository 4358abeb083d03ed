"""Presence through the broker: deltas, at most one per interval, across workers, expiry.

The brokers are driven directly (no sockets): a :class:`Member` records what a
room socket would receive, and keeps the online list a client would show (the
``welcome`` list, then every ``presence`` delta in order). Each test runs on
both stacks; the ones about several workers need Redis. Two apps on the same
Redis key prefix stand for two workers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from project.broker import Broker, MemoryPresence, get_broker
from project.websocket.protocol import PreparedText

ROOM = "lobby"


class Member:
    """One socket in a room: subscribed, then joined, as ``chat.run_room`` does."""

    def __init__(self, broker: Broker, username: str, room: str = ROOM) -> None:
        self.broker = broker
        self.room = room
        self.connection = uuid.uuid4().hex
        self.frames: list[dict[str, Any]] = []
        self.unsubscribe = broker.subscribe(room, self.receive)
        self.welcome = broker.join(room, self.connection, username)

    def receive(self, message: PreparedText) -> None:
        self.frames.append(json.loads(message.text))

    @property
    def presence(self) -> list[dict[str, Any]]:
        return [frame for frame in self.frames if frame["type"] == "presence"]

    @property
    def online(self) -> list[str]:
        """What the page shows: frames held until the welcome are applied after it, in order."""
        names = set(self.welcome)
        for frame in self.presence:
            names |= set(frame["joined"])
            names -= set(frame["left"])
        return sorted(names)

    def leave(self) -> None:
        self.unsubscribe()
        self.broker.leave(self.room, self.connection)


def eventually(check: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def quiet(broker: Broker) -> None:
    """Wait long enough for any presence frame still due to have been sent."""
    time.sleep(broker.presence_interval * 3)


@pytest.fixture
def broker_for(make_app: Callable[..., Flask]) -> Callable[..., Broker]:
    def build(**settings: Any) -> Broker:
        return get_broker(make_app(**{"PRESENCE_INTERVAL": 0.1, **settings}))

    return build


def needs_redis(broker: Broker) -> None:
    if isinstance(broker.presence, MemoryPresence):
        pytest.skip("several workers share presence through Redis only")


def test_filling_a_room_costs_each_socket_one_frame_per_interval_not_one_per_join(
    broker_for: Callable[..., Broker],
) -> None:
    broker = broker_for(PRESENCE_INTERVAL=0.2)
    users = [f"user{i:03}" for i in range(300)]
    started = time.monotonic()
    members = [Member(broker, name) for name in users]
    elapsed = time.monotonic() - started
    eventually(lambda: all(m.online == users for m in members))
    quiet(broker)
    frames = [len(m.presence) for m in members]
    # One frame per interval at most, plus the one sent at once after a quiet spell.
    allowed = elapsed / broker.presence_interval + 2
    assert max(frames) <= allowed, (max(frames), allowed)
    # Sending the whole list on every join made this N²/2 frames: 45,000 here.
    assert sum(frames) <= len(users) * allowed < len(users) ** 2 / 10
    assert all(m.online == users for m in members)


def test_a_presence_frame_carries_the_change_not_the_list(
    broker_for: Callable[..., Broker],
) -> None:
    broker = broker_for()
    alice = Member(broker, "alice")
    assert alice.welcome == ["alice"]
    bob = Member(broker, "bob")
    assert bob.welcome == ["alice", "bob"]
    eventually(lambda: alice.presence == [{"type": "presence", "joined": ["bob"], "left": []}])
    assert bob.online == ["alice", "bob"]
    bob.leave()
    eventually(lambda: alice.online == ["alice"])
    assert alice.presence[-1] == {"type": "presence", "joined": [], "left": ["bob"]}
    quiet(broker)
    assert len(alice.presence) == 2


def test_more_sockets_of_an_online_user_send_no_presence_frame(
    broker_for: Callable[..., Broker],
) -> None:
    broker = broker_for()
    tabs = [Member(broker, "alice") for _ in range(50)]
    quiet(broker)
    assert [len(tab.presence) for tab in tabs] == [0] * 50
    assert all(tab.welcome == ["alice"] for tab in tabs)
    for tab in tabs[1:]:
        tab.leave()
    quiet(broker)
    assert tabs[0].presence == []
    bob = Member(broker, "bob")
    eventually(lambda: tabs[0].online == ["alice", "bob"])
    quiet(broker)
    assert len(tabs[0].presence) == 1
    assert bob.online == ["alice", "bob"]


def test_leaving_forgets_the_room(broker_for: Callable[..., Broker]) -> None:
    broker = broker_for()
    members = [Member(broker, name) for name in ("alice", "bob", "alice")]
    for member in members:
        member.leave()
    broker.leave(ROOM, "never-joined")  # a no-op, not an error
    assert broker.online(ROOM) == []
    assert not broker._members and not broker._users and not broker._shown


def test_a_user_leaving_on_another_worker_disappears(
    broker_for: Callable[..., Broker],
) -> None:
    first, second = broker_for(), broker_for()
    needs_redis(first)
    alice = Member(first, "alice")
    bob = Member(second, "bob")
    assert bob.welcome == ["alice", "bob"]
    eventually(lambda: alice.online == ["alice", "bob"])
    carol = Member(second, "carol")
    eventually(lambda: alice.online == ["alice", "bob", "carol"])
    bob.leave()
    eventually(lambda: alice.online == ["alice", "carol"])
    eventually(lambda: carol.online == ["alice", "carol"])


def test_the_users_of_a_worker_that_died_expire(broker_for: Callable[..., Broker]) -> None:
    first, second = broker_for(PRESENCE_TTL=1), broker_for(PRESENCE_TTL=1)
    needs_redis(first)
    alice = Member(first, "alice")
    Member(second, "bob")
    eventually(lambda: alice.online == ["alice", "bob"])
    second.close()  # no leave: its heartbeat just stops, as when a worker is killed
    started = time.monotonic()
    eventually(lambda: alice.online == ["alice"], timeout=6)
    assert time.monotonic() - started < 3  # the TTL, plus one heartbeat of the first worker
    quiet(first)
    assert alice.online == ["alice"]  # its own entry is kept alive by its heartbeat
