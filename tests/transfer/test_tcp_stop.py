"""Stopping the TCP fast path's server: a transfer in flight finishes, idle connections go.

An operator's ``systemctl stop`` (SIGTERM) or a deploy must not turn a push
that is nearly done into a retry: the server stops taking work, gives the
operations in flight their grace, and only then cuts what is left.
"""

from __future__ import annotations

import threading
from pathlib import Path

from flask import Flask

from apps.transfer import tcp
from tests.conftest import serve_in_thread
from tests.transfer.conftest import Owner, files_of, random_file, sha256_of
from tests.transfer.test_tcp import login


def test_a_push_in_flight_finishes_when_the_server_stops_and_idle_connections_are_cut(
    app: Flask, owner: Owner, tmp_path: Path
) -> None:
    source = tmp_path / "nearly-done.bin"
    digest = random_file(source, 4 * 1024 * 1024)
    server = tcp.make_server(app, "127.0.0.1", 0)
    serve_in_thread(server, "transfer-server")
    with login(server.port, owner) as pushing, login(server.port, owner) as idle:
        size = source.stat().st_size
        reply = pushing.ask({"op": "push", "name": source.name, "size": size, "sha256": digest})
        assert reply["ok"] and reply["offset"] == 0
        data = source.read_bytes()
        pushing.sock.sendall(data[: size // 2])

        server.shutdown()  # what the SIGTERM handler does, then close with the grace
        stopping = threading.Thread(target=server.close, args=(30.0,), daemon=True)
        stopping.start()
        assert idle.closed(), "a connection between operations is cut at once"

        pushing.sock.sendall(data[size // 2 :])
        done = pushing.read()
        assert done == {"ok": True, "file_id": done["file_id"], "sha256": digest, "size": size}
        stopping.join(timeout=10)
        assert not stopping.is_alive(), "the server stopped once the push was done"
    [stored] = files_of(app, owner)
    assert (stored.complete, stored.sha256) == (True, sha256_of(source))
