"""Ending a session closes the sockets it opened, on whichever worker serves them."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import free_port
from tests.realtime.test_chat import login_cookie, receive
from tests.realtime.test_cluster import create_room
from tests.servers import ROOT, Server, create_users, server_env, start_server

# make test-fast leaves these out: gunicorn clusters and live sockets: seconds each.
pytestmark = pytest.mark.slow

NEW_PASSWORD = "Quiet-Harbor-83"


@pytest.fixture(params=["gthread", "gevent"])
def site(
    request: pytest.FixtureRequest, tmp_path: Path, mysql_database: str, redis_prefix: str
) -> Iterator[Server]:
    env = server_env(request.param, tmp_path, mysql_database, redis_prefix, GUNICORN_WORKERS="2")
    create_users(env, "alice")
    server = start_server(request.param, env, free_port())
    yield server
    server.stop()


def closed_with(ws: ClientConnection, seconds: float = 5) -> int | None:
    """The close code the server sends within *seconds* (frames before it are skipped)."""
    try:
        while True:
            ws.recv(timeout=seconds)
    except ConnectionClosed:
        return ws.close_code
    except TimeoutError:
        return None


@contextmanager
def room_socket(site: Server, cookie: str) -> Iterator[ClientConnection]:
    with connect(site.ws + "/ws/rooms/lobby", additional_headers={"Cookie": cookie}) as ws:
        receive(ws, "welcome")
        yield ws


def test_logging_out_in_one_tab_closes_the_sessions_sockets(site: Server) -> None:
    """Stops a logged-out session's socket from posting on: the socket of another tab of the
    same session is closed with 1008 when the session logs out."""
    cookie = login_cookie(site.url, "alice")
    create_room(site, cookie)
    with room_socket(site, cookie) as tab:
        http = requests.Session()
        http.headers["Cookie"] = cookie
        page = http.get(site.url + "/accounts/profile", timeout=10).text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert token
        out = http.post(
            site.url + "/accounts/logout",
            data={"csrf_token": token.group(1)},
            allow_redirects=False,
            timeout=10,
        )
        assert out.status_code == 302
        assert closed_with(tab) == 1008


def test_a_password_change_closes_the_other_sessions_sockets(site: Server) -> None:
    """Stops the revocation gap: after `manage.py changepassword` ended a user's sessions, the
    user's already-open room socket still posted. It is now closed (1008) within a second."""
    cookie = login_cookie(site.url, "alice")
    create_room(site, cookie)
    with room_socket(site, cookie) as open_socket:
        subprocess.run(
            [sys.executable, "manage.py", "changepassword", "alice", "--password-stdin"],
            cwd=ROOT,
            env=site.env,
            input=NEW_PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
        assert closed_with(open_socket) == 1008
