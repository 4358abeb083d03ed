"""The fault suite's stack: a private Redis (AOF) and MariaDB, gunicorn (gevent, 2 workers)
and the TCP transfer server, started once per module and put back up before each test.

Skipped with the reason when ``redis-server`` or ``mariadbd`` is not installed, a
failure instead under ``REQUIRE_SERVICES=1`` (as for the shared services).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import service_missing
from tests.faults.scene import Deployment, Scene
from tests.faults.services import MariaDBService, RedisService, missing_binaries


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    missing = missing_binaries()
    if missing:
        service_missing(", ".join(missing), FileNotFoundError("not installed"))
    base = tmp_path_factory.mktemp("faults")
    redis = RedisService(base)
    mariadb = MariaDBService(base)
    redis.start()
    deployed = None
    try:
        mariadb.install()
        mariadb.start()
        deployed = Deployment(base, redis, mariadb)
        yield deployed
    finally:
        if deployed is not None:
            deployed.stop()
        mariadb.stop()
        redis.stop()


@pytest.fixture
def scene(deployment: Deployment, request: pytest.FixtureRequest, tmp_path: Path) -> Scene:
    return Scene(deployment, request.node.name, tmp_path)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[list[dict]]:
    """Summaries a test appends; printed (and written to $FAULTS_REPORT, one JSON a line)."""
    import os

    summaries: list[dict] = []
    yield summaries
    for summary in summaries:
        line = json.dumps(summary, default=str)
        print("\nFAULT SUMMARY " + line)
        if os.environ.get("FAULTS_REPORT"):
            with open(os.environ["FAULTS_REPORT"], "a") as f:
                f.write(line + "\n")
