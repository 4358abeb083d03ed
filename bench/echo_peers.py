"""The peers our WebSocket echo is measured against in :mod:`bench.echo`.

* :func:`build_flask_sock_app` is a minimal Flask app with one `flask-sock
  <https://pypi.org/project/flask-sock/>`_ route, ``/ws/echo``, that sends
  every message back, plus ``GET /`` for the harness's readiness check. It
  runs under the same ``gunicorn -c gunicorn.conf.py`` (gthread or gevent,
  same workers, threads and worker_connections) as the project's app, so the
  only difference between the two is the WebSocket implementation:
  ``gunicorn 'bench.echo_peers:build_flask_sock_app()'``. flask-sock is a
  benchmark-only peer, not a project dependency: ``pip install -e .[bench]``.
* ``python -m bench.echo_peers --port PORT`` runs the `websockets` library's
  own asyncio server (``websockets.asyncio.server.serve``) with the same echo,
  in one process, until SIGTERM or SIGINT. It is the reference for what a
  well-optimised Python WebSocket implementation does on this machine without
  WSGI, gunicorn or threads in the way.

Neither peer negotiates permessage-deflate with :mod:`bench.echo`'s clients
(they do not offer it), so all peers move the same bytes as ours. The
websockets server here and flask-sock (by default) send no keepalive pings;
ours pings only after 20 s of silence, which never comes in a run.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from flask import Flask

ECHO_PATH = "/ws/echo"


def build_flask_sock_app() -> Flask:
    """The smallest Flask app with a flask-sock echo at ``/ws/echo`` (a gunicorn app factory).

    Imported lazily so that ``python -m bench.echo_peers`` (the websockets peer)
    and the rest of the benchmarks work without flask-sock installed.
    """
    from flask_sock import Sock

    app = Flask(__name__)
    sock = Sock(app)

    @app.get("/")
    def ready() -> str:
        return "ok"

    @sock.route(ECHO_PATH)
    def echo(ws: Any) -> None:
        # receive() raises ConnectionClosed when the client leaves; flask-sock catches it.
        while True:
            ws.send(ws.receive())

    return app


async def _echo(connection: Any) -> None:
    """The websockets server's handler: every message back as it came (text or binary)."""
    async for message in connection:
        await connection.send(message)


async def serve_websockets(host: str, port: int, max_size: int) -> None:
    """Serve the echo on ``host:port`` until SIGTERM/SIGINT; one process, one event loop."""
    from websockets.asyncio.server import serve

    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    # compression=None: the clients do not offer it either; same bytes on the wire as ours.
    async with serve(_echo, host, port, max_size=max_size, compression=None, ping_interval=None):
        print(f"websockets echo serving on ws://{host}:{port}{ECHO_PATH}", flush=True)
        await stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.echo_peers",
        description="The websockets library's asyncio echo server, the reference of bench.echo.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-size", type=int, default=1 << 20, help="largest message (1 MiB)")
    args = parser.parse_args(argv)
    asyncio.run(serve_websockets(args.host, args.port, args.max_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
