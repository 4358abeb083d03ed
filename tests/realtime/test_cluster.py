"""Chat across processes and hosts: two gunicorn deployments sharing MariaDB and Redis.

Two separate gunicorn masters stand for two hosts, so the clients are certain
to be served by different processes: a message must travel through Redis.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import free_port
from tests.realtime.test_chat import login_cookie, receive, wait_online
from tests.servers import Server, create_users, server_env, start_server

# make test-fast leaves these out: two gunicorn hosts, one killed: seconds each.
pytestmark = pytest.mark.slow


@pytest.fixture
def two_hosts(tmp_path: Path, mysql_database: str, redis_prefix: str) -> Iterator[list[Server]]:
    env = server_env(
        "gthread", tmp_path, mysql_database, redis_prefix, PRESENCE_TTL="3", GUNICORN_WORKERS="2"
    )
    create_users(env, "alice", "bob")
    hosts = [start_server("gthread", env, free_port()), start_server("gevent", env, free_port())]
    yield hosts
    for host in hosts:
        host.stop(signal.SIGKILL)


def create_room(host: Server, cookie: str) -> None:
    import re

    import requests

    http = requests.Session()
    http.headers["Cookie"] = cookie
    page = http.get(host.url + "/realtime/", timeout=10).text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token
    response = http.post(
        host.url + "/realtime/",
        data={"csrf_token": token.group(1), "name": "lobby"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302


def test_a_message_reaches_a_client_on_another_host(two_hosts: list[Server]) -> None:
    first, second = two_hosts
    alice_cookie = login_cookie(first.url, "alice")
    bob_cookie = login_cookie(second.url, "bob")  # sessions in Redis work on either host
    create_room(first, alice_cookie)
    with connect(first.ws + "/ws/rooms/lobby", additional_headers={"Cookie": alice_cookie}) as a:
        receive(a, "welcome")  # alice has joined (the 101 comes before the join)
        with connect(second.ws + "/ws/rooms/lobby", additional_headers={"Cookie": bob_cookie}) as b:
            assert receive(b, "welcome")["online"] == ["alice", "bob"]
            a.send(json.dumps({"type": "message", "body": "from host one"}))
            assert receive(b, "message")["body"] == "from host one"
            assert receive(a, "message")["body"] == "from host one"  # the sender sees it too
            b.send(json.dumps({"type": "message", "body": "and back from host two"}))
            assert receive(a, "message")["body"] == "and back from host two"


def test_presence_forgets_the_users_of_a_host_that_died(two_hosts: list[Server]) -> None:
    first, second = two_hosts
    alice_cookie = login_cookie(first.url, "alice")
    bob_cookie = login_cookie(second.url, "bob")
    create_room(first, alice_cookie)
    with (
        connect(first.ws + "/ws/rooms/lobby", additional_headers={"Cookie": alice_cookie}) as a,
        connect(second.ws + "/ws/rooms/lobby", additional_headers={"Cookie": bob_cookie}) as b,
    ):
        online = receive(a, "welcome")["online"]
        receive(b, "welcome")
        online = wait_online(a, online, ["alice", "bob"])
        # The second host dies without a goodbye: no leave event is ever sent for bob.
        for pid in subprocess.run(
            ["pgrep", "-P", str(second.proc.pid)], capture_output=True, text=True
        ).stdout.split():
            subprocess.run(["kill", "-9", pid])
        second.stop(signal.SIGKILL)
        started = time.monotonic()
        wait_online(a, online, ["alice"], timeout=10)
        assert time.monotonic() - started < 8  # PRESENCE_TTL is 3 s here
        b.close_socket()  # its host is gone: nothing to close politely


def test_a_user_who_leaves_on_one_host_disappears_on_the_other(two_hosts: list[Server]) -> None:
    first, second = two_hosts
    alice_cookie = login_cookie(first.url, "alice")
    bob_cookie = login_cookie(second.url, "bob")
    create_room(first, alice_cookie)
    with connect(first.ws + "/ws/rooms/lobby", additional_headers={"Cookie": alice_cookie}) as a:
        online = receive(a, "welcome")["online"]
        with connect(second.ws + "/ws/rooms/lobby", additional_headers={"Cookie": bob_cookie}) as b:
            assert receive(b, "welcome")["online"] == ["alice", "bob"]
            online = wait_online(a, online, ["alice", "bob"])
        started = time.monotonic()
        wait_online(a, online, ["alice"])
        assert time.monotonic() - started < 3  # a leave is sent within PRESENCE_INTERVAL, not TTL
