"""What the benchmarks share: a bench database, gunicorn, the load generators, the report.

* :func:`bench_database` creates ``<prefix><random>`` on a MySQL/MariaDB server
  and drops it on the way out;
* :func:`gunicorn_server` runs ``python -m gunicorn -c gunicorn.conf.py APP`` on
  a free loopback port until the block ends, waiting until it answers first;
* :class:`LoadGenerator` loads one URL for a number of seconds with ``wrk``
  (see :func:`find_wrk`) or, without it, with Python threads over
  ``http.client``, and returns a :class:`LoadResult`;
* :func:`add_common_arguments` / :func:`check_common_arguments` give every
  benchmark the same ``--duration``, ``--warmup``, ``--connections``,
  ``--workers``, ``--threads``, ``--load-tool``, ``--no-install`` and
  ``--mysql-url`` options;
* :func:`run_main` runs a benchmark's body with SIGTERM turned into an
  exception, so that every ``finally`` (gunicorn, database, ...) runs on an
  error, Ctrl-C or SIGTERM alike.

Progress goes to stderr (:func:`log`); stdout is only the report.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import runpy
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from types import FrameType
from typing import Any
from unittest import mock
from urllib.parse import urlencode, urlsplit

import pymysql

from project.db import mysql_connect_args
from project.urls import DatabaseURL

REPO_ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = REPO_ROOT / "gunicorn.conf.py"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/mysql"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 10.0

# wrk prints its own report for people; these hooks add one line that is easy to parse.
# An answer other than 200 counts as an error (wrk itself counts only 4xx/5xx): a
# redirect to the login page would otherwise pass for a served page.
WRK_REPORT_LUA = """
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  not_ok = 0
end

function response(status, headers, body)
  if status ~= 200 then
    not_ok = not_ok + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("not_ok")
  end
  io.write(string.format("BENCH_RESULT %.0f %.0f %.0f %.0f %.0f\\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + bad,
    latency:percentile(50), latency:percentile(99)))
end
"""

Headers = Mapping[str, str]


def log(message: str) -> None:
    """Progress goes to stderr, so stdout is only the results table."""
    print(message, file=sys.stderr, flush=True)


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


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


def connect_server(url: DatabaseURL, database: str | None = None) -> Any:
    """A connection with the app's arguments (host, credentials, TLS, ...) to ``database``.

    ``None`` selects no database (the bench database may not exist yet).
    """
    return pymysql.connect(**{**mysql_connect_args(url), "database": database})


@dataclass(frozen=True)
class BenchDatabase:
    """A database of our own: its name, the app's ``DATABASE_URL`` for it, the server."""

    name: str
    app_url: str  # the server URL with this database name, query options kept
    url: DatabaseURL
    server_version: str

    def connect(self) -> Any:
        return connect_server(self.url, self.name)


@contextlib.contextmanager
def bench_database(server_url: str, prefix: str) -> Iterator[BenchDatabase]:
    """Create the empty database ``<prefix><random>``; drop it on the way out."""
    name = f"{prefix}{secrets.token_hex(4)}"
    app_url = urlsplit(server_url)._replace(path=f"/{name}").geturl()
    url = DatabaseURL.parse(app_url, REPO_ROOT)
    if url.engine != "mysql":
        raise SystemExit(f"--mysql-url must be a MySQL/MariaDB URL, not {url.display}")
    with contextlib.closing(connect_server(url)) as admin, admin.cursor() as cursor:
        version = admin.get_server_info().removeprefix("5.5.5-")  # MariaDB's compat prefix
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    log(f"created database {name} on {url.host}:{url.port}")
    try:
        yield BenchDatabase(name, app_url, url, version)
    finally:
        with contextlib.closing(connect_server(url)) as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        log(f"dropped database {name}")


# -- gunicorn ------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on now (gunicorn binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gunicorn_env(
    base: Mapping[str, str], port: int, workers: int | None, threads: int | None
) -> dict[str, str]:
    """``base`` plus what every bench gunicorn gets: the port, no access log, the sizes."""
    env = dict(base)
    env.setdefault("SITE_URL", "http://127.0.0.1")  # production requires it; links only
    env.update(
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_ACCESS_LOG="/dev/null",
        PYTHONDONTWRITEBYTECODE="1",
    )
    if workers:
        env["GUNICORN_WORKERS"] = str(workers)
    if threads:
        env["GUNICORN_THREADS"] = str(threads)
    return env


def gunicorn_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The values gunicorn.conf.py gives under ``env``, read from the file itself.

    So the report states what gunicorn really ran with, not a copy of its defaults.
    """
    with mock.patch.dict(os.environ, env, clear=True):
        conf = runpy.run_path(str(GUNICORN_CONF))
    return {key: conf[key] for key in ("workers", "threads", "worker_class")}


def describe_gunicorn(settings: Mapping[str, Any]) -> str:
    return (
        f"gunicorn `-c gunicorn.conf.py`: {settings['workers']} workers x "
        f"{settings['threads']} threads ({settings['worker_class']})"
    )


@dataclass(frozen=True)
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def request(
    port: int,
    method: str,
    path: str,
    headers: Headers | None = None,
    body: bytes | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> Response:
    """One request, on ``conn`` (kept open) or on a new connection (closed after)."""
    own = conn is None
    connection = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        if own:
            connection.close()


def get(port: int, path: str, headers: Headers | None = None) -> tuple[int, bytes]:
    """One GET on a new connection: status and body."""
    response = request(port, "GET", path, headers)
    return response.status, response.body


# -- logging in as a browser does ----------------------------------------------


LOGIN_PATH = "/accounts/login"
SESSION_COOKIE = "session"  # SESSION_COOKIE_NAME
CSRF_COOKIE = "csrf"  # a visitor's CSRF secret (project.session_interface)


def response_cookie(response: Response, name: str = SESSION_COOKIE) -> str | None:
    """The value a response sets for cookie *name*, if it sets one."""
    for header in response.headers.get_all("Set-Cookie") or []:
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        if name in cookie and cookie[name].value:
            return cookie[name].value
    return None


def session_cookie(response: Response) -> str | None:
    """The session id a response sets, if it sets one."""
    return response_cookie(response, SESSION_COOKIE)


def csrf_token(html: str) -> str:
    """The ``csrf_token`` field's value on a page with a form."""
    tag = re.search(r'<input[^>]*\bname="csrf_token"[^>]*>', html)
    value = re.search(r'\bvalue="([^"]+)"', tag.group(0)) if tag else None
    if value is None:
        raise RuntimeError(f"no csrf_token field on {LOGIN_PATH}")
    return value.group(1)


SECOND_STEP_PATH = "/accounts/login/2fa"


def log_in(port: int, login: str, password: str, code: Callable[[], str] | None = None) -> str:
    """Log in through the real form (GET, then POST with its CSRF token); the new session id.

    A visitor has no session yet: the form's secret comes back in the ``csrf`` cookie.
    An account with a second factor is then asked for a code, which *code* gives.
    """
    page = request(port, "GET", LOGIN_PATH)
    secret = response_cookie(page, CSRF_COOKIE)
    if page.status != 200 or secret is None:
        raise RuntimeError(f"GET {LOGIN_PATH}: {page.status}, csrf cookie {secret!r}")
    form = {"csrf_token": csrf_token(page.body.decode()), "login": login, "password": password}
    headers = {
        "Cookie": f"{CSRF_COOKIE}={secret}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    done = request(port, "POST", LOGIN_PATH, headers, urlencode(form).encode())
    sid = session_cookie(done)
    if done.status != 302 or sid is None:
        raise RuntimeError(f"POST {LOGIN_PATH} as {login}: {done.status}, no new session")
    if done.headers.get("Location") == SECOND_STEP_PATH:
        if code is None:
            raise RuntimeError(f"{login} has a second factor: pass code=")
        return _second_step(port, login, sid, code())
    return sid


def _second_step(port: int, login: str, pending_sid: str, code: str) -> str:
    cookie = {"Cookie": f"{SESSION_COOKIE}={pending_sid}"}
    page = request(port, "GET", SECOND_STEP_PATH, cookie)
    form = {"csrf_token": csrf_token(page.body.decode()), "code": code}
    headers = {**cookie, "Content-Type": "application/x-www-form-urlencoded"}
    done = request(port, "POST", SECOND_STEP_PATH, headers, urlencode(form).encode())
    sid = session_cookie(done)
    if done.status != 302 or sid is None:
        raise RuntimeError(f"POST {SECOND_STEP_PATH} as {login}: {done.status}, no new session")
    return sid


# -- CPU accounting from /proc ---------------------------------------------------


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name; None if it exited."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (the ones still alive)."""
    ticks = 0
    for pid in pids:
        fields = proc_stat(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLK_TCK


def descendants_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root``'s living descendants (not ``root`` itself).

    The servers are our children (gunicorn's master and its workers, or the
    websockets peer), and this process starts nothing else while they run.
    """
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := proc_stat(entry.name)) is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    descendants: list[int] = []
    todo = list(tree.get(root, []))
    while todo:
        pid = todo.pop()
        descendants.append(pid)
        todo.extend(tree.get(pid, []))
    return cpu_seconds(descendants)


def pids_named(*names: str) -> list[int]:
    """Processes whose command name (``/proc/PID/comm``) is one of ``names``: local servers."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry.name}/comm").read_text().strip() in names:
                    pids.append(int(entry.name))
    return pids


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and iowait, from ``/proc/stat``."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


@contextlib.contextmanager
def gunicorn_server(
    app: str, env: Mapping[str, str], port: int, log_path: Path, ready_path: str = "/"
) -> Iterator[int]:
    """Run gunicorn on ``app`` until the block ends; yields its pid once ``ready_path`` is 200."""
    command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), app]
    with open(log_path, "wb") as log_file:
        # A session of its own: Ctrl-C reaches only us, and we stop gunicorn in order.
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    log(f"started gunicorn {app} (pid {proc.pid}) on 127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{tail(log_path)}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if get(port, ready_path)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"gunicorn did not answer in {READY_TIMEOUT_S:.0f} s:\n{tail(log_path)}"
                )
            time.sleep(0.2)
        yield proc.pid
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (gunicorn's graceful stop), then SIGKILL to its process group if it hangs.

    Also SIGKILL when the wait is interrupted (Ctrl-C, SIGTERM), so no gunicorn outlives us.
    """
    started = time.monotonic()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if not isinstance(exc, subprocess.TimeoutExpired):
                log(f"killed gunicorn (pid {proc.pid})")
                raise
    log(f"stopped gunicorn (pid {proc.pid}) in {time.monotonic() - started:.1f} s")


def tail(path: Path, lines: int = 30) -> str:
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


def run_wrk(
    wrk: str,
    url: str,
    connections: int,
    seconds: int,
    script: Path,
    headers: Headers | None = None,
) -> LoadResult:
    """Load ``url`` with wrk for ``seconds``; failures and answers other than 200 are errors."""
    threads = max(1, min(connections, os.cpu_count() or 1))
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={REQUEST_TIMEOUT_S:g}s",
        "-s",
        str(script),
    ]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        shown = " ".join("-H <header>" if arg.startswith("-H") else arg for arg in command)
        raise RuntimeError(f"{shown} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            requests, duration_us, errors, p50_us, p99_us = (float(x) for x in line.split()[1:])
            return LoadResult(
                int(requests), int(errors), duration_us / 1e6, p50_us / 1000, p99_us / 1000
            )
    raise RuntimeError(f"no result line in wrk's output:\n{done.stdout}\n{done.stderr}")


def run_python_load(
    port: int, path: str, connections: int, seconds: int, headers: Headers | None = None
) -> LoadResult:
    """Fallback load: one thread per keep-alive ``http.client`` connection, for ``seconds``."""
    per_thread: list[tuple[list[float], int]] = [([], 0)] * connections
    deadline = time.perf_counter() + seconds
    sent = dict(headers or {})

    def client(index: int) -> None:
        latencies: list[float] = []
        errors = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        while (start := time.perf_counter()) < deadline:
            try:
                conn.request("GET", path, headers=sent)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
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


class LoadGenerator:
    """wrk when available (``wrk`` is its path), else the Python generator; same interface."""

    def __init__(self, wrk: str | None, workdir: Path, connections: int) -> None:
        self.wrk = wrk
        self.connections = connections
        self.script = workdir / "report.lua"
        if wrk:
            self.script.write_text(WRK_REPORT_LUA)

    @property
    def tool(self) -> str:
        return "wrk" if self.wrk else "python"

    def load(
        self, port: int, path: str, seconds: int, headers: Headers | None = None
    ) -> LoadResult:
        if self.wrk:
            url = f"http://127.0.0.1:{port}{path}"
            return run_wrk(self.wrk, url, self.connections, seconds, self.script, headers)
        return run_python_load(port, path, self.connections, seconds, headers)

    def measure(
        self,
        name: str,
        port: int,
        path: str,
        warmup: int,
        duration: int,
        headers: Headers | None = None,
    ) -> LoadResult:
        """An unmeasured warm-up of ``warmup`` seconds, then ``duration`` seconds measured."""
        if warmup:
            log(f"{name}: warm-up {warmup} s at {self.connections} connections")
            self.load(port, path, warmup, headers)
        log(f"{name}: measure {duration} s at {self.connections} connections")
        result = self.load(port, path, duration, headers)
        log(f"{name}: {result.rps:,.0f} req/s, {result.errors} errors")
        return result


# -- command line and report ------------------------------------------------------


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark takes, with the same defaults everywhere."""
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


def check_common_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("duration", "connections", "workers", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be greater than zero")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")


class UsageError(Exception):
    """The benchmark cannot run as asked (exit status 2, like a bad option)."""


def choose_wrk(args: argparse.Namespace) -> str | None:
    """wrk's path per ``--load-tool``/``--no-install``; None means the Python generator.

    Raises:
        UsageError: ``--load-tool wrk`` and wrk is not available.
    """
    wrk = None if args.load_tool == "python" else find_wrk(install=not args.no_install)
    if wrk is None and args.load_tool == "wrk":
        raise UsageError("--load-tool wrk: wrk is not available")
    return wrk


def results_table(rows: list[tuple[str, LoadResult]]) -> list[str]:
    """Markdown lines: one row per labelled run."""
    lines = [
        "| variant | req/s | p50 ms | p99 ms | requests | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r in rows:
        lines.append(
            f"| {label} | {r.rps:,.0f} | {fmt_ms(r.p50_ms)} | {fmt_ms(r.p99_ms)} "
            f"| {r.requests:,} | {r.errors:,} |"
        )
    return lines


def ratio(numerator: LoadResult, denominator: LoadResult) -> str:
    if not denominator.rps:
        return "n/a (the reference served nothing)"
    return f"{numerator.rps / denominator.rps:.2f}x"


def load_notes(tool: str, results: list[LoadResult]) -> list[str]:
    """The caveats under a table: the Python generator's lower figures, failed requests."""
    notes = []
    if tool == "python":
        notes.append(
            "(Python load generator: it competes with gunicorn for the GIL-bound CPU, "
            "so these figures are lower than wrk's.)"
        )
    if any(r.errors for r in results):
        notes.append("WARNING: some requests failed; see the errors column.")
    return notes


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally block


def run_main(
    name: str, body: Callable[[], int], errors: tuple[type[BaseException], ...] = ()
) -> int:
    """Run a benchmark's body; SIGTERM and Ctrl-C unwind through its cleanup.

    ``errors`` (plus the harness's own) end the benchmark with status 1 and a
    one-line message instead of a traceback.
    """
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        return body()
    except KeyboardInterrupt:
        log(f"{name}: interrupted; gunicorn stopped and the bench data removed")
        return 130
    except UsageError as exc:
        log(str(exc))
        return 2
    except (RuntimeError, pymysql.MySQLError, subprocess.SubprocessError, *errors) as exc:
        log(f"{name} failed: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
