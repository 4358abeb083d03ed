"""The second factor's rules on both stacks: the TOTP window, replays, recovery codes, storage."""

from __future__ import annotations

import time
from collections.abc import Callable

import pyotp
import pytest
from flask import Flask

from apps.accounts import twofactor
from project.extensions import db
from tests.conftest import create_account

STEP = twofactor.STEP_SECONDS


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret).at(step * STEP)


def enrolled(
    app: Flask, name: str = "alice", *, step: int | None = None
) -> tuple[int, str, list[str]]:
    """A user with a confirmed second factor, confirmed by the code of *step* (default: now - 5)."""
    user_id = create_account(name)
    secret = twofactor.pending_secret(user_id)
    step = int(time.time() // STEP) - 5 if step is None else step
    codes = twofactor.confirm(user_id, code_at(secret, step), now=step * STEP)
    assert codes is not None
    return user_id, secret, codes


def test_enrolment_takes_effect_only_when_confirmed_by_a_right_code(app: Flask) -> None:
    with app.app_context():
        user_id = create_account("alice")
        secret = twofactor.pending_secret(user_id)
        assert twofactor.pending_secret(user_id) == secret  # a reload shows the same QR code
        assert not twofactor.is_enrolled(user_id)
        now = time.time()
        wrong = f"{(int(pyotp.TOTP(secret).at(now)) + 1) % 1_000_000:06d}"
        assert twofactor.confirm(user_id, wrong, now=now) is None
        assert not twofactor.is_enrolled(user_id)

        codes = twofactor.confirm(user_id, pyotp.TOTP(secret).at(now), now=now)
        assert codes is not None and len(codes) == 10 and len(set(codes)) == 10
        assert all(twofactor.RECOVERY_CODE.match(code) for code in codes)
        assert twofactor.is_enrolled(user_id)
        factor = twofactor.get(user_id)
        assert factor is not None and factor.enrolled and factor.recovery_codes_left == 10


def test_codes_one_step_either_side_are_accepted_and_two_steps_are_not(app: Flask) -> None:
    with app.app_context():
        user_id, secret, _ = enrolled(app, step=1000)
        now = 1010 * STEP + 5
        assert twofactor.verify(user_id, code_at(secret, 1008), now=now) is None  # too old
        assert twofactor.verify(user_id, code_at(secret, 1012), now=now) is None  # too new
        for step in (1009, 1010, 1011):
            assert twofactor.verify(user_id, code_at(secret, step), now=now) is (
                twofactor.Accepted.TOTP
            )


def test_an_accepted_code_never_works_again_nor_does_an_older_one(app: Flask) -> None:
    with app.app_context():
        user_id, secret, _ = enrolled(app, step=2000)
        now = 2010 * STEP
        code = code_at(secret, 2010)
        assert twofactor.verify(user_id, code, now=now) is twofactor.Accepted.TOTP
        assert twofactor.verify(user_id, code, now=now) is None  # replayed
        assert twofactor.verify(user_id, code_at(secret, 2009), now=now) is None  # older step
        assert twofactor.verify(user_id, code_at(secret, 2000), now=2000 * STEP) is None
        # The code that confirmed the enrolment is spent too.
        user2, secret2, _ = enrolled(app, "bob", step=3000)
        assert twofactor.verify(user2, code_at(secret2, 3000), now=3000 * STEP) is None


def test_a_code_is_one_users_only(app: Flask) -> None:
    with app.app_context():
        alice, secret, codes = enrolled(app, "alice")
        bob, _, _ = enrolled(app, "bob")
        now = time.time()
        assert twofactor.verify(bob, pyotp.TOTP(secret).at(now), now=now) is None
        assert twofactor.verify(bob, codes[0]) is None
        assert twofactor.verify(alice, codes[0]) is twofactor.Accepted.RECOVERY


def test_each_recovery_code_works_once_typed_loosely(app: Flask) -> None:
    with app.app_context():
        user_id, _, codes = enrolled(app)
        letters, digits = codes[0].split("-")
        assert twofactor.verify(user_id, f" {letters.upper()} {digits} ") is (
            twofactor.Accepted.RECOVERY
        )
        assert twofactor.verify(user_id, codes[0]) is None
        assert twofactor.verify(user_id, f"{letters}{digits}") is None
        assert twofactor.verify(user_id, codes[1]) is twofactor.Accepted.RECOVERY
        factor = twofactor.get(user_id)
        assert factor is not None and factor.recovery_codes_left == 8

        fresh = twofactor.new_recovery_codes(user_id)
        assert twofactor.verify(user_id, codes[2]) is None  # the old set is gone
        assert twofactor.verify(user_id, fresh[0]) is twofactor.Accepted.RECOVERY


@pytest.mark.parametrize(
    "junk", ["", "12345", "1234567", "abcde-1234", "zzzzz-99999x", "' OR 1=1 --"]
)
def test_codes_of_the_wrong_shape_are_refused(app: Flask, junk: str) -> None:
    with app.app_context():
        user_id, _, _ = enrolled(app)
        assert twofactor.verify(user_id, junk) is None


def test_a_user_without_a_second_factor_verifies_nothing(app: Flask) -> None:
    with app.app_context():
        user_id = create_account("alice")
        secret = twofactor.pending_secret(user_id)  # pending, not confirmed
        now = time.time()
        assert twofactor.verify(user_id, pyotp.TOTP(secret).at(now), now=now) is None
        assert twofactor.verify(create_account("bob"), "abcde-12345") is None


def test_the_database_holds_neither_the_secret_nor_the_recovery_codes(app: Flask) -> None:
    with app.app_context():
        user_id, secret, codes = enrolled(app)
        stored = db.fetch_one("SELECT * FROM two_factor WHERE user_id = %s", (user_id,))
        assert stored is not None and secret not in str(stored)
        hashes = [
            r["code_hash"]
            for r in db.fetch_all(
                "SELECT code_hash FROM recovery_codes WHERE user_id = %s", (user_id,)
            )
        ]
        assert len(hashes) == 10
        assert not any(code in h or code.replace("-", "") in h for code in codes for h in hashes)


def test_after_a_secret_key_rotation_codes_fail_cleanly_and_a_reset_is_the_way_back(
    make_app: Callable[..., Flask], app: Flask
) -> None:
    with app.app_context():
        user_id, secret, codes = enrolled(app)
    rotated = make_app(SECRET_KEY="r" * 48)
    with rotated.app_context():
        now = time.time()
        assert twofactor.verify(user_id, pyotp.TOTP(secret).at(now), now=now) is None
        assert twofactor.verify(user_id, codes[0]) is None
        assert twofactor.reset(user_id, actor_id=None, ip="cli")
        assert not twofactor.is_enrolled(user_id)
        assert twofactor.reset(user_id, actor_id=None, ip="cli") is False
        audit = db.fetch_all("SELECT action FROM audit_log WHERE target_user_id = %s", (user_id,))
        assert [r["action"] for r in audit].count("2fa.reset") == 1


def test_deleting_the_user_deletes_the_second_factor(app: Flask) -> None:
    with app.app_context():
        user_id, _, _ = enrolled(app)
        db.execute("DELETE FROM users WHERE id = %s", (user_id,))
        assert db.fetch_value("SELECT COUNT(*) FROM two_factor WHERE user_id = %s", (user_id,)) == 0
        assert (
            db.fetch_value("SELECT COUNT(*) FROM recovery_codes WHERE user_id = %s", (user_id,))
            == 0
        )
