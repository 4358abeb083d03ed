"""Password rules and hashing: what a new password must be; hashes that improve on their own."""

from __future__ import annotations

import pytest
from flask import Flask

from apps.accounts import models
from apps.accounts.passwords import common_passwords, password_problems
from tests.conftest import PASSWORD, create_account, log_in


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Ab1!xyz", "at least 8 characters"),
        ("12345678901", "more than digits"),
        ("password1", "too common"),
        ("Qwerty123", "too common"),
        ("xx-alice-xx", "username or email"),
        ("ALICE@example.com", "username or email"),
        ("a" * 129, "at most 128"),
    ],
)
def test_weak_passwords_are_refused_with_the_reason(password: str, problem: str) -> None:
    problems = password_problems(password, username="alice", email="alice@example.com")
    assert any(problem in p for p in problems), problems


def test_a_good_password_has_no_problems() -> None:
    assert password_problems("Blue-Harbour-71", username="alice", email="alice@example.com") == []


def test_the_shipped_common_password_list_is_large() -> None:
    assert len(common_passwords()) > 10_000
    assert "123456" in common_passwords()


def test_hashes_are_argon2id_and_rehashed_at_login_when_the_cost_changes(make_app) -> None:  # type: ignore[no-untyped-def]
    cheap = make_app(ARGON2_TIME_COST=1)
    with cheap.app_context():
        user_id = create_account("alice")
        old_hash = models.get_password_hash(user_id)
    assert old_hash is not None and old_hash.startswith("$argon2id$") and ",t=1," in old_hash

    stronger: Flask = make_app(ARGON2_TIME_COST=2)
    assert log_in(stronger.test_client(), "alice", PASSWORD).status_code == 302
    with stronger.app_context():
        new_hash = models.get_password_hash(user_id)
    assert new_hash is not None and ",t=2," in new_hash and new_hash != old_hash
    assert log_in(stronger.test_client(), "alice", PASSWORD).status_code == 302


def test_a_burst_of_logins_does_not_hold_a_hash_each_in_memory() -> None:
    """Stops a login burst exhausting memory: 16 verifications at the production cost
    (64 MiB each) at once used to hold 1 GiB; they queue behind a per-process bound.

    Measured in a fresh process (peak RSS is per process and only grows)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import resource, threading
        from project import create_app
        from apps.accounts.passwords import MAX_CONCURRENT_HASHES, hash_password, verify_password
        app = create_app("test", overrides={"ARGON2_MEMORY_KIB": 65536, "ARGON2_TIME_COST": 1,
                                            "ARGON2_PARALLELISM": 1}, environ={})
        with app.app_context():
            stored = hash_password("correct horse battery")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = threading.Barrier(16)
        def login():
            start.wait()
            with app.app_context():
                verify_password(stored, "wrong guess")
        threads = [threading.Thread(target=login) for _ in range(16)]
        for t in threads: t.start()
        for t in threads: t.join()
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(MAX_CONCURRENT_HASHES, grown // 1024)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    bound, grown_mib = (int(v) for v in run.stdout.split())
    assert grown_mib <= (bound + 1) * 64, f"peak grew {grown_mib} MiB with a bound of {bound}"
