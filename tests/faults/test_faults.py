"""Faults against real processes, each while chat, page, tus and TCP traffic is in flight.

One test per fault; each asserts the reliability model (``../shared/DESIGN.md``,
issue 10 item 4): page answers only 200/302/401/503 (503 with Retry-After, never
500); pages answer 200 again within 15 s of the service's return without a
restart; every chat message a sender saw accepted is seen by every member; at
most one unanswered message per disconnect; nothing stored twice; both uploads
complete with the right SHA-256; no traceback in the logs for an expected fault.
The figures of each run are printed as ``FAULT SUMMARY {...}`` (run with ``-s``)
and appended to ``$FAULTS_REPORT`` when it is set.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.scene import Deployment, Fault, Outcome, Scene

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def verdict(outcome: Outcome, report: list[dict], **expect: bool) -> None:
    report.append(outcome.summary())
    problems = outcome.problems(**expect)
    if problems:
        pytest.fail("\n".join(["", *problems]), pytrace=False)


def test_redis_stop_and_start(scene: Scene, deployment: Deployment, report: list[dict]) -> None:
    """Redis stops cleanly for 5 s and comes back with its AOF.

    What an operator sees: pages answer 503 "try again shortly" (with Retry-After)
    while Redis is away, chat messages sent meanwhile get an ``unavailable`` error
    and go through on resend, uploads pause and resume; within seconds of Redis's
    return everything answers as before and nobody has been logged out.
    """
    outcome = scene.play(
        lambda s: s.stop_for(
            deployment.redis.stop, deployment.redis.start, "redis stop/start (AOF)"
        )
    )
    verdict(outcome, report)


def test_redis_restarted_empty(scene: Scene, deployment: Deployment, report: list[dict]) -> None:
    """Redis stops and comes back empty (its data lost): every session is gone.

    What an operator sees: 503s during the outage, then users are sent to the login
    form (302, or 401 for a socket or API) — cleanly, never a 500 — and after
    logging in again all works; chat members rejoin and miss nothing that was
    accepted; uploads, authenticated by API key, finish intact.
    """

    def empty_restart(s: Scene) -> Fault:
        def start_empty() -> None:
            deployment.redis.wipe()
            deployment.redis.start()

        return s.stop_for(deployment.redis.stop, start_empty, "redis restarted empty")

    verdict(scene.play(empty_restart), report, logged_out=True)


def test_mariadb_stop_and_start(scene: Scene, deployment: Deployment, report: list[dict]) -> None:
    """MariaDB stops cleanly for 5 s and starts again on the same port and data.

    What an operator sees: pages that need the database answer 503 with
    Retry-After, chat messages get ``unavailable`` and are resent, tus chunks and
    the TCP push retry; the pools reconnect by themselves and pages answer 200
    within seconds of the database's return, with no restart and nothing lost.
    """
    outcome = scene.play(
        lambda s: s.stop_for(
            deployment.mariadb.stop, deployment.mariadb.start, "mariadb stop/start"
        )
    )
    verdict(outcome, report)


def test_gunicorn_graceful_reload(scene: Scene, deployment: Deployment, report: list[dict]) -> None:
    """gunicorn's master gets SIGHUP: new workers start, the old ones finish gracefully.

    What an operator sees: no failed page; chat sockets are closed with 1001 and
    reconnect with ``?after=`` (nothing missed, nothing doubled); the tus upload's
    chunk in flight finishes or is resumed; the TCP push (another process) is untouched.
    """
    before = set(deployment.workers())

    def reload(s: Scene) -> Fault:
        fault = s.signal_master(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            set(deployment.workers()) & before or len(deployment.workers()) < 2
        ):
            time.sleep(0.1)
        fault.note += f" (old workers gone after {time.monotonic() - fault.struck:.1f} s)"
        return fault

    outcome = scene.play(reload)
    outcome.extra["workers_replaced"] = not (set(deployment.workers()) & before)
    verdict(outcome, report)
    assert outcome.extra["workers_replaced"], "SIGHUP did not replace the workers"


def test_a_worker_killed(scene: Scene, deployment: Deployment, report: list[dict]) -> None:
    """One gunicorn worker (the one holding alice's chat socket) is SIGKILLed; the master
    starts another.

    What an operator sees: at most the requests in flight on that worker fail at
    the connection level; its sockets drop (no close frame) and reconnect with
    ``?after=``; a tus chunk cut by it is resumed from the server's offset;
    nothing else changes, and the new worker serves within seconds.
    """
    outcome = scene.play(lambda s: s.kill_worker())
    dropped = [a for a in outcome.answers if a.status is None]
    outcome.extra["page_connection_errors"] = len(dropped)
    verdict(outcome, report, killed=True)


def test_the_transfer_server_killed_mid_push(
    scene: Scene, deployment: Deployment, report: list[dict]
) -> None:
    """The TCP fast path's server is SIGKILLed while a push is half sent, then restarted.

    What an operator sees: the CLI notes a dropped connection, retries, resumes
    from the bytes the server had recorded, and ends with the right SHA-256; the
    web side notices nothing.
    """
    outcome = scene.play(lambda s: s.kill_transfer_server())
    verdict(outcome, report)
    assert outcome.summary()["tcp"]["retries"] >= 1, "the push was not cut: the fault missed it"
