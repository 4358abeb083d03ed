"""Private backing services for the fault suite: a Redis and a MariaDB the tests may stop.

The shared test servers (``tests/conftest.py``) belong to everyone; a fault test
must be free to shut its services down and bring them back on the same port and
data directory, so each fault module runs its own:

* :class:`RedisService`: ``redis-server`` with ``--appendonly yes`` in a private
  directory. :meth:`~RedisService.stop` is a clean shutdown (SIGTERM: the AOF is
  flushed, so sessions survive a :meth:`~RedisService.start`);
  :meth:`~RedisService.wipe` empties the directory, so the next start is empty.
* :class:`MariaDBService`: a data directory made by ``mariadb-install-db`` and a
  ``mariadbd`` on 127.0.0.1 (root, no password), stopped with SIGTERM (a clean
  shutdown) and started again on the same port and directory.
* :class:`TransferServer`: ``manage.py transfer-server`` with its log in a file.
* :class:`SlowLink`: a TCP proxy that holds the upload direction to a set rate, so a
  push over the loopback is still in flight when a fault strikes.

Every process's output goes to a log file next to its data; a service that fails
to start raises with the tail of that log.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pymysql
import redis

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def missing_binaries() -> list[str]:
    """The service programs this machine lacks (the suite is skipped without them)."""
    return [
        name
        for name in ("redis-server", "mariadbd", "mariadb-install-db")
        if shutil.which(name) is None
        and shutil.which(name, path="/usr/sbin:/usr/local/sbin") is None
    ]


def _which(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    assert found, f"{name} is not installed"
    return found


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_process(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RedisService:
    """A private ``redis-server`` with AOF on, stoppable and restartable on one port and dir."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = base / "redis.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15) -> None:
        command = [
            _which("redis-server"),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log),
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError:
                    pass
                except redis.ConnectionError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{_tail(self.log)}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): the AOF is flushed and kept."""
        _stop_process(self.proc, signal.SIGTERM, 15)
        self.proc = None

    def wipe(self) -> None:
        """Empty the data directory (call while stopped): the next start is an empty Redis."""
        assert self.proc is None, "wipe() a stopped Redis"
        for entry in self.dir.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2)


class MariaDBService:
    """A private MariaDB server (root, no password) in its own data directory."""

    def __init__(self, base: Path) -> None:
        self.base = base / "mariadb"
        self.datadir = self.base / "data"
        self.socket = self.base / "sock"
        self.log = self.base / "error.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def install(self) -> None:
        """Create the system tables (``mariadb-install-db``), ignoring the host's my.cnf."""
        self.base.mkdir(parents=True, exist_ok=True)
        command = [
            _which("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if os.geteuid() == 0:
            command.append("--user=root")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{done.stdout}\n{done.stderr}")

    def start(self, timeout: float = 60) -> None:
        command = [
            _which("mariadbd"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-networking=0",
            "--skip-name-resolve",
            "--skip-log-bin",
            f"--pid-file={self.base / 'mariadbd.pid'}",
            f"--log-error={self.log}",
            "--innodb-buffer-pool-size=128M",
            "--max-connections=500",
        ]
        if os.geteuid() == 0:
            command.append("--user=root")
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect().close()
                return
            except pymysql.err.MySQLError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not start:\n{_tail(self.log)}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), as ``systemctl stop`` does."""
        _stop_process(self.proc, signal.SIGTERM, 60)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user="root",
            password="",
            database=database,
            connect_timeout=2,
            autocommit=True,
        )

    def url(self, database: str) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new utf8mb4 database; returns its DATABASE_URL."""
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        conn.close()
        return self.url(name)


class TransferServer:
    """``manage.py transfer-server`` on a free port, its output appended to *log*."""

    LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 30) -> None:
        """Start on a free port, or again on the port it had (clients keep their address)."""
        start_at = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "transfer-server", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdout=out, stderr=out,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log, "rb") as f:
                f.seek(start_at)
                match = self.LISTENING.search(f.read().decode(errors="replace"))
            if match:
                self.port = int(match[1])
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"transfer-server did not start:\n{_tail(self.log)}")

    def stop(self) -> None:
        _stop_process(self.proc, signal.SIGTERM, 20)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no goodbye, no grace; what a crash or the OOM killer does."""
        _stop_process(self.proc, signal.SIGKILL, 20)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class SlowLink:
    """A TCP proxy to ``127.0.0.1:target`` that holds client-to-server bytes to *rate* per second.

    Each connection is pumped by two threads; when either side closes, both do.
    """

    def __init__(self, target: int, rate: int) -> None:
        self.target, self.rate = target, rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="slow-link", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            threading.Thread(
                target=self._pump, args=(client, upstream, self.rate), daemon=True
            ).start()
            threading.Thread(target=self._pump, args=(upstream, client, 0), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, rate: int) -> None:
        started, moved = time.monotonic(), 0
        try:
            while block := source.recv(64 * 1024):
                sink.sendall(block)
                moved += len(block)
                if rate:
                    ahead = moved / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
