"""How much the connection pool buys: req/s of a one-row page, pooled versus a fresh connection.

One gunicorn, started with the production settings (``-c gunicorn.conf.py``)
and :mod:`bench.db_pool_app`, serves both variants, so workers, threads and
every hook are the same for both:

* ``/bench/pooled`` reads the row with ``db.fetch_one`` (DBUtils pool);
* ``/bench/fresh`` opens a ``pymysql.connect(...)`` per request and closes it.

Each variant gets a warm-up (which also fills the pool) and then a timed run
at a fixed number of keep-alive connections. The load comes from ``wrk`` when
it is installed (on Debian as root it is installed with apt-get, with a
message, unless ``--no-install``), else from a Python generator of threads
over ``http.client``; that one is slower and shares the GIL, so its figures
are a floor, and it says so.

The benchmark creates its own database, ``bench_pool_<random>``, on the
server of ``--mysql-url``, and drops it at the end; gunicorn is stopped at
the end too, also on an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import runpy
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pymysql

from bench.db_pool_app import ROW_ID, TABLE
from project.db import mysql_connect_args
from project.settings import ConfigurationError, load_settings
from project.urls import DatabaseURL

REPO_ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = REPO_ROOT / "gunicorn.conf.py"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/mysql"
VARIANTS = (
    ("pooled", "/bench/pooled", "pooled: `db.fetch_one`"),
    ("fresh", "/bench/fresh", "fresh: `pymysql.connect(**mysql_connect_args(url))` per request"),
)
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 10.0

# wrk prints its own report for people; this hook adds one line that is easy to parse.
WRK_REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_RESULT %.0f %.0f %.0f %.0f %.0f\\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def log(message: str) -> None:
    """Progress goes to stderr, so stdout is only the results table."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class LoadResult:
    """One timed run: counts, wall time, and latency percentiles in milliseconds."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# -- the database --------------------------------------------------------------


def _connect_server(url: DatabaseURL) -> Any:
    """An admin connection to the server, no database selected (it may not exist yet).

    The app's connection arguments (host, credentials, TLS, ...), less the database.
    """
    return pymysql.connect(**{**mysql_connect_args(url), "database": None})


@contextlib.contextmanager
def bench_database(server_url: str) -> Iterator[tuple[str, str]]:
    """Create ``bench_pool_<random>`` with its one-row table; drop it on the way out.

    Yields the app's ``DATABASE_URL`` (the server URL with the new name, query
    options kept) and the server's version string.
    """
    name = f"bench_pool_{secrets.token_hex(4)}"
    app_url = urlsplit(server_url)._replace(path=f"/{name}").geturl()
    url = DatabaseURL.parse(app_url, REPO_ROOT)
    if url.engine != "mysql":
        raise SystemExit(f"--mysql-url must be a MySQL/MariaDB URL, not {url.display}")
    with contextlib.closing(_connect_server(url)) as admin, admin.cursor() as cursor:
        version = admin.get_server_info().removeprefix("5.5.5-")  # MariaDB's compat prefix
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    log(f"created database {name} on {url.host}:{url.port}")
    try:
        with contextlib.closing(_connect_server(url)) as admin, admin.cursor() as cursor:
            cursor.execute(f"USE `{name}`")
            cursor.execute(
                f"CREATE TABLE {TABLE} (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL,"
                " value INT NOT NULL) ENGINE=InnoDB"
            )
            cursor.execute(
                f"INSERT INTO {TABLE} (id, name, value) VALUES (%s, %s, %s)",
                (ROW_ID, "benchmark row", 42),
            )
        yield app_url, version
    finally:
        with contextlib.closing(_connect_server(url)) as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        log(f"dropped database {name}")


# -- gunicorn ------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on now (gunicorn binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gunicorn_settings(env: dict[str, str]) -> dict[str, Any]:
    """The values gunicorn.conf.py gives under ``env``, read from the file itself.

    So the report states what gunicorn really ran with, not a copy of its defaults.
    """
    with mock.patch.dict(os.environ, env, clear=True):
        conf = runpy.run_path(str(GUNICORN_CONF))
    return {key: conf[key] for key in ("workers", "threads", "worker_class")}


def get(port: int, path: str) -> tuple[int, bytes]:
    """One GET on a new connection: status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def gunicorn_server(env: dict[str, str], port: int, log_path: Path) -> Iterator[None]:
    """Run gunicorn until the block ends, waiting until it answers before yielding."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(GUNICORN_CONF),
        "bench.db_pool_app:build_app()",
    ]
    with open(log_path, "wb") as log_file:
        # A session of its own: Ctrl-C reaches only us, and we stop gunicorn in order.
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    log(f"started gunicorn (pid {proc.pid}) on 127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{_tail(log_path)}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if get(port, VARIANTS[0][1])[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"gunicorn did not answer in {READY_TIMEOUT_S:.0f} s:\n{_tail(log_path)}"
                )
            time.sleep(0.2)
        yield
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (gunicorn's graceful stop), then SIGKILL to its process group if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log(f"stopped gunicorn (pid {proc.pid})")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- load generators -------------------------------------------------------------


def find_wrk(install: bool) -> str | None:
    """The path of ``wrk``, installing the Debian package first if allowed and possible."""
    path = shutil.which("wrk")
    if path or not install:
        return path
    if not shutil.which("apt-get") or os.geteuid() != 0:
        log(
            "wrk is not installed; install it for better figures (Debian: apt-get install wrk). "
            "Using the Python load generator."
        )
        return None
    log(
        "wrk is not installed: installing the Debian package 'wrk' with apt-get "
        "(pass --no-install to use the Python load generator instead)"
    )
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
        done = subprocess.run(command, env=apt_env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            log(f"{' '.join(command)} failed:\n{done.stderr.strip()}")
            break
    path = shutil.which("wrk")
    if path is None:
        log("could not install wrk; using the Python load generator")
    return path


def run_wrk(wrk: str, url: str, connections: int, seconds: int, script: Path) -> LoadResult:
    """Load ``url`` with wrk for ``seconds``; wrk counts non-2xx/3xx answers as errors."""
    threads = max(1, min(connections, os.cpu_count() or 1))
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={REQUEST_TIMEOUT_S:g}s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            requests, duration_us, errors, p50_us, p99_us = (float(x) for x in line.split()[1:])
            return LoadResult(
                int(requests), int(errors), duration_us / 1e6, p50_us / 1000, p99_us / 1000
            )
    raise RuntimeError(f"no result line in wrk's output:\n{done.stdout}\n{done.stderr}")


def run_python_load(port: int, path: str, connections: int, seconds: int) -> LoadResult:
    """Fallback load: one thread per keep-alive ``http.client`` connection, for ``seconds``."""
    per_thread: list[tuple[list[float], int]] = [([], 0)] * connections
    deadline = time.perf_counter() + seconds

    def client(index: int) -> None:
        latencies: list[float] = []
        errors = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        while (start := time.perf_counter()) < deadline:
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                ok = 200 <= response.status < 400
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()  # reconnects on the next request
            latencies.append(time.perf_counter() - start)
            errors += not ok
        conn.close()
        per_thread[index] = (latencies, errors)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies = sorted(x for lat, _ in per_thread for x in lat)
    errors = sum(e for _, e in per_thread)

    def percentile(p: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return LoadResult(len(latencies), errors, elapsed, percentile(50), percentile(99))


# -- the benchmark ---------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench db_pool",
        description="req/s of a one-row page: our pool versus a fresh PyMySQL connection.",
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds measured per variant (default 10)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="seconds of unmeasured load before each variant (default 2)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=32,
        help="concurrent keep-alive HTTP connections (default 32)",
    )
    parser.add_argument(
        "--workers", type=int, help="gunicorn workers (default: gunicorn.conf.py's, 2 x cores + 1)"
    )
    parser.add_argument(
        "--threads", type=int, help="threads per gunicorn worker (default: gunicorn.conf.py's, 32)"
    )
    parser.add_argument(
        "--load-tool",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk if installed or installable, else Python (default)",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="never apt-get install wrk; fall back to Python instead",
    )
    parser.add_argument(
        "--mysql-url",
        default=os.environ.get("BENCH_MYSQL_URL", DEFAULT_MYSQL_URL),
        help="server to create the bench database on; its database name is "
        f"replaced (default: $BENCH_MYSQL_URL or {DEFAULT_MYSQL_URL})",
    )
    args = parser.parse_args(argv)
    for name in ("duration", "connections", "workers", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be greater than zero")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def server_env(
    args: argparse.Namespace, database_url: str, port: int, instance: Path
) -> dict[str, str]:
    """gunicorn's environment: production settings with a random key, on the bench database.

    REDIS_URL is dropped so that both variants run on the same, known stack
    (with no session cookie, neither touches the session store anyway).
    """
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        APP_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        DATABASE_URL=database_url,
        BENCH_INSTANCE_PATH=str(instance),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_ACCESS_LOG="/dev/null",
        PYTHONDONTWRITEBYTECODE="1",
    )
    if args.workers:
        env["GUNICORN_WORKERS"] = str(args.workers)
    if args.threads:
        env["GUNICORN_THREADS"] = str(args.threads)
    return env


def format_report(
    results: dict[str, LoadResult],
    settings: dict[str, Any],
    pool_size: int,
    args: argparse.Namespace,
    tool: str,
    server_version: str,
) -> str:
    """The markdown table, its settings line and the pooled/fresh ratio."""

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    lines = [
        f"gunicorn `-c gunicorn.conf.py`: {settings['workers']} workers x "
        f"{settings['threads']} threads ({settings['worker_class']}), DB_POOL_SIZE={pool_size}; "
        f"load: {tool}, {args.connections} connections, {args.duration} s per variant "
        f"after {args.warmup} s warm-up; server {server_version}; "
        f"{os.cpu_count()} cores",
        "",
        "| variant | req/s | p50 ms | p99 ms | requests | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, _, label in VARIANTS:
        r = results[key]
        lines.append(
            f"| {label} | {r.rps:,.0f} | {ms(r.p50_ms)} | {ms(r.p99_ms)} "
            f"| {r.requests:,} | {r.errors:,} |"
        )
    fresh = results["fresh"].rps
    ratio = f"{results['pooled'].rps / fresh:.2f}x" if fresh else "n/a (fresh served nothing)"
    lines += ["", f"ratio pooled/fresh (req/s): **{ratio}**"]
    if tool == "python":
        lines.append(
            "(Python load generator: it competes with gunicorn for the GIL-bound CPU, "
            "so these figures are lower than wrk's.)"
        )
    if any(r.errors for r in results.values()):
        lines.append("WARNING: some requests failed; see the errors column.")
    return "\n".join(lines)


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: gunicorn, database


def run(args: argparse.Namespace, wrk: str | None) -> dict[str, LoadResult]:
    """Set up database and gunicorn, load each variant, tear down; print the report."""
    results: dict[str, LoadResult] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench_db_pool_") as tmp,
        bench_database(args.mysql_url) as (database_url, server_version),
    ):
        tmpdir = Path(tmp)
        script = tmpdir / "report.lua"
        script.write_text(WRK_REPORT_LUA)
        port = free_port()
        env = server_env(args, database_url, port, tmpdir / "instance")
        try:  # the check gunicorn.conf.py's on_starting makes, but with our message
            pool_size = load_settings(environ=env)["DB_POOL_SIZE"]
        except ConfigurationError as exc:
            raise RuntimeError(f"settings: {exc}") from None
        settings = gunicorn_settings(env)

        def load(path: str, seconds: int) -> LoadResult:
            if wrk:
                url = f"http://127.0.0.1:{port}{path}"
                return run_wrk(wrk, url, args.connections, seconds, script)
            return run_python_load(port, path, args.connections, seconds)

        with gunicorn_server(env, port, tmpdir / "gunicorn.log"):
            answers = {get(port, path) for _, path, _ in VARIANTS}
            if len(answers) != 1 or next(iter(answers))[0] != 200:
                raise RuntimeError(f"the variants do not give the same 200 answer: {answers}")
            for key, path, _ in VARIANTS:
                if args.warmup:
                    log(f"{key}: warm-up {args.warmup} s at {args.connections} connections")
                    load(path, args.warmup)
                log(f"{key}: measure {args.duration} s at {args.connections} connections")
                results[key] = load(path, args.duration)
                log(f"{key}: {results[key].rps:,.0f} req/s, {results[key].errors} errors")

        tool = "wrk" if wrk else "python"
        print(format_report(results, settings, pool_size, args, tool, server_version))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        wrk = None if args.load_tool == "python" else find_wrk(install=not args.no_install)
        if wrk is None and args.load_tool == "wrk":
            log("--load-tool wrk: wrk is not available")
            return 2
        results = run(args, wrk)
    except KeyboardInterrupt:
        log("interrupted; gunicorn stopped and the bench database dropped")
        return 130
    except (RuntimeError, pymysql.MySQLError, subprocess.SubprocessError) as exc:
        log(f"db_pool failed: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 1 if any(r.errors for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
