"""Autobahn|Testsuite conformance of ``/ws/echo``, driven by kosoku, under the three deployments.

kosoku runs the Autobahn|Testsuite case files against a live server, without
Docker, and writes Autobahn's report (``index.json`` plus one JSON and HTML file
per case). Each test starts one deployment with the helpers of
``tests/servers.py``, runs one suite against it with a time limit, and fails if
any case did not pass. How to run it by hand, what is left out and why, and the
latest results: ``apps/realtime/CONFORMANCE.md``.

Suites:

* ``core``: categories 1-7, 9 and 10 (framing, pings, reserved bits and opcodes,
  fragmentation, UTF-8, closing, limits and performance, misc), compression off.
* ``deflate``: categories 12 and 13 (permessage-deflate), ``WEBSOCKET_COMPRESSION=1``.
  Each of its 216 cases echoes 1000 messages, which costs minutes: by default
  (CI) gthread runs the 156 cases up to 65536 bytes, runserver and gevent the 60
  up to 1024 bytes (and 8192 bytes in 256-byte frames); see ``Suite.excluded_subcases``.

Environment:

* ``CONFORMANCE_FULL=1``: run every deflate case under every server (about 10 minutes each).
* ``CONFORMANCE_REPORT_DIR=DIR``: keep the kosoku reports (and a ``summary.json``)
  in ``DIR/<server>-<suite>/`` instead of the test's temporary directory.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.servers import Server, server_env, start_server

# make test-fast leaves these out: the Autobahn suite against each server: minutes.
pytestmark = pytest.mark.slow

FULL = os.environ.get("CONFORMANCE_FULL") == "1"
REPORT_DIR = os.environ.get("CONFORMANCE_REPORT_DIR")

#: Autobahn 9.x sends messages up to 16 MiB; the default limit is 1 MiB.
MAX_MESSAGE_SIZE = "20000000"

#: A case passes when both verdicts are among these (kosoku's own ``passed``).
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASSING_CLOSE = {"OK", "INFORMATIONAL"}
#: The report's columns, in Autobahn's order.
VERDICTS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")

SERVERS = ("runserver", "gthread", "gevent")


def deflate_globs(subcases: tuple[int, ...]) -> tuple[str, ...]:
    """Globs for these sub-cases of every 12.x and 13.x group (e.g. 10 -> 12.*.10, 13.*.10)."""
    return tuple(f"{major}.*.{sub}" for major in (12, 13) for sub in subcases)


#: Sub-cases 1-10 echo 1000 messages of 16, 64, ... 131072 bytes in one frame each; 11-18
#: echo 8192-131072 bytes in frames of 256, 1024, 4096 or 32768 bytes. 12 groups have them all.
DEFLATE_GROUPS = 12
#: The 131072-byte sub-cases: two thirds of the deflate suite's time.
DEFLATE_BIG = (10, 15, 16, 17, 18)
#: 4096-65536 bytes in one frame, and 16384-65536 bytes in 256-byte frames.
DEFLATE_MEDIUM = (5, 6, 7, 8, 9, 12, 13, 14)


@dataclass(frozen=True)
class Suite:
    name: str
    include: tuple[str, ...]
    env: dict[str, str]
    timeout: int  # seconds for the whole kosoku run
    parallelism: int = 1
    cases: int = 0  # how many the whole selection has

    def excluded_subcases(self, kind: str) -> tuple[int, ...]:
        """What CI leaves out, for time; nothing with CONFORMANCE_FULL=1.

        The protocol and permessage-deflate code is the same under every server
        (sans I/O); what differs is the socket layer, which the core suite's 16 MiB
        messages already exercise. So the deflate suite runs up to 65536 bytes under
        the default production worker (gthread), and its small cases elsewhere.
        """
        if FULL or self.name != "deflate":
            return ()
        if kind == "gthread":
            return DEFLATE_BIG
        return DEFLATE_BIG + DEFLATE_MEDIUM

    def exclude(self, kind: str) -> tuple[str, ...]:
        return deflate_globs(self.excluded_subcases(kind))

    def expected_cases(self, kind: str) -> int:
        """Guards against a glob that silently selects less (or more) than intended."""
        return self.cases - DEFLATE_GROUPS * len(self.excluded_subcases(kind))


CORE = Suite(
    "core",
    include=tuple(f"{category}.*" for category in (1, 2, 3, 4, 5, 6, 7, 9, 10)),
    env={"WEBSOCKET_COMPRESSION": "0"},
    timeout=300,
    cases=301,
)
DEFLATE = Suite(
    "deflate",
    include=("12.*", "13.*"),
    env={"WEBSOCKET_COMPRESSION": "1"},
    timeout=2400 if FULL else 600,
    # Each case is one connection echoing 1000 messages in turn: two at once keep both
    # cores busy (kosoku and the server) and change no verdict.
    parallelism=2,
    cases=216,
)
SUITES = (CORE, DEFLATE)


def kosoku_command(url: str, suite: Suite, kind: str, outdir: Path) -> list[str]:
    executable = Path(sys.executable).with_name("kosoku")
    command = [str(executable) if executable.exists() else shutil.which("kosoku") or "kosoku"]
    command += [url, "-o", str(outdir), "-p", str(suite.parallelism)]
    for pattern in suite.include:
        command += ["-i", pattern]
    for pattern in suite.exclude(kind):
        command += ["-x", pattern]
    return command


def verdict(case: dict[str, str]) -> str:
    """One column per case: its behavior, or FAILED when either verdict is not a pass."""
    behavior, close = case["behavior"], case["behaviorClose"]
    if behavior == "UNIMPLEMENTED":
        return behavior
    if behavior not in PASSING or close not in PASSING_CLOSE:
        return "FAILED"
    return behavior


def case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


def load_index(outdir: Path) -> dict[str, dict[str, str]]:
    """Case id -> index entry, for the one server kosoku talked to."""
    index = json.loads((outdir / "index.json").read_text())
    assert len(index) == 1, f"one agent expected in the report, got {list(index)}"
    (cases,) = index.values()
    return dict(sorted(cases.items(), key=lambda item: case_key(item[0])))


def summarize(cases: dict[str, dict[str, str]]) -> dict[str, dict[str, int]]:
    """Category -> verdict -> number of cases."""
    counts: dict[str, collections.Counter[str]] = {}
    for case_id, case in cases.items():
        counts.setdefault(case_id.split(".")[0], collections.Counter())[verdict(case)] += 1
    return {category: {v: n[v] for v in VERDICTS} for category, n in counts.items()}


def format_summary(title: str, summary: dict[str, dict[str, int]]) -> str:
    lines = [title, f"{'category':>8} " + " ".join(f"{v:>13}" for v in VERDICTS)]
    for category, counts in summary.items():
        lines.append(f"{category:>8} " + " ".join(f"{counts[v]:>13}" for v in VERDICTS))
    return "\n".join(lines)


def not_passed(outdir: Path, cases: dict[str, dict[str, str]]) -> list[str]:
    """One line per case that did not pass, with what Autobahn expected and got."""
    lines = []
    for case_id, case in cases.items():
        if verdict(case) in PASSING:
            continue
        detail = json.loads((outdir / case["reportfile"]).read_text())
        lines.append(
            f"{case_id}: behavior={case['behavior']} ({detail['result']}) "
            f"close={case['behaviorClose']} ({detail['resultClose']}) "
            f"remote close code={case['remoteCloseCode']} "
            f"expected={detail['expected']!r:.300} received={detail['received']!r:.300}"
        )
    return lines


@pytest.fixture
def start(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start one deployment with extra settings; stopped after the test."""
    started: list[Server] = []

    def factory(kind: str, **extra: str) -> Server:
        mysql_url = prefix = None
        if kind != "runserver":
            mysql_url = request.getfixturevalue("mysql_database")
            prefix = request.getfixturevalue("redis_prefix")
        env = server_env(kind, tmp_path, mysql_url, prefix, **extra)
        started.append(start_server(kind, env, free_port()))
        return started[-1]

    yield factory
    for server in started:
        server.stop()


@pytest.mark.parametrize(
    "suite",
    # The whole test's limit: the run's, plus starting (and migrating) the server.
    [pytest.param(s, id=s.name, marks=pytest.mark.timeout(s.timeout + 180)) for s in SUITES],
)
@pytest.mark.parametrize("kind", SERVERS)
def test_autobahn_testsuite(
    kind: str,
    suite: Suite,
    start: Callable[..., Server],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    server = start(
        kind,
        WEBSOCKET_MAX_MESSAGE_SIZE=MAX_MESSAGE_SIZE,
        # A keepalive ping would show among a case's received events; no case is
        # silent for long, but a loaded CI machine should not make that a near thing.
        WEBSOCKET_PING_INTERVAL="60",
        **suite.env,
    )
    outdir = (
        Path(REPORT_DIR) / f"{kind}-{suite.name}" if REPORT_DIR else tmp_path / "report"
    ).resolve()
    if outdir.exists():
        shutil.rmtree(outdir)
    command = kosoku_command(server.ws + "/ws/echo", suite, kind, outdir)
    started = time.monotonic()
    try:
        run = subprocess.run(
            command, capture_output=True, text=True, timeout=suite.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"kosoku did not finish within {suite.timeout}s: {' '.join(command)}")
    elapsed = time.monotonic() - started
    assert (outdir / "index.json").exists(), f"no report (exit {run.returncode}): {run.stderr}"

    cases = load_index(outdir)
    summary = summarize(cases)
    text = format_summary(f"{kind} / {suite.name}: {len(cases)} cases in {elapsed:.0f}s", summary)
    print(text)
    record_property("conformance", {"seconds": round(elapsed), "summary": summary})
    (outdir / "summary.json").write_text(
        json.dumps(
            {
                "server": kind,
                "suite": suite.name,
                "command": command,
                "seconds": round(elapsed, 1),
                "summary": summary,
            },
            indent=2,
        )
    )

    expected = suite.expected_cases(kind)
    assert len(cases) == expected, f"{len(cases)} cases run, {expected} selected"
    failures = not_passed(outdir, cases)
    assert not failures, (
        f"{text}\n\ncases not passed (report: {outdir}):\n"
        + "\n".join(failures)
        + f"\n\nkosoku said: {run.stderr[-2000:]}"
    )
