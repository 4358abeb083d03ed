"""Accounts data: unique names and emails, the last admin, reset tokens and API keys.

These call the model functions directly, inside an app context, on both
stacks; where a rule matters for security (uniqueness, single use, revocation)
the database's own constraints are checked too, not only the Python checks.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

from apps.accounts import apikeys, models
from apps.accounts.exceptions import DuplicateUser, LastAdminError
from project.db import IntegrityError, utcnow
from project.extensions import db
from tests.conftest import PASSWORD_HASH

INSERT_USER = (
    "INSERT INTO users (username, username_key, email, password_hash, is_active, is_admin,"
    " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)


def new_user(username: str, email: str | None = None, *, is_admin: bool = False) -> models.User:
    return models.create_user(
        username, email or f"{username.lower()}@example.com", PASSWORD_HASH, is_admin=is_admin
    )


def insert_raw(username: str, username_key: str, email: str) -> None:
    """Insert a row as a buggy or racing writer would: no Python checks at all."""
    db.execute(INSERT_USER, (username, username_key, email, "!", True, False, utcnow()))


def user_count() -> int:
    return int(db.fetch_value("SELECT COUNT(*) FROM users"))


# -- unique usernames and emails --------------------------------------------------------------


@pytest.mark.parametrize("second", ["bob", "BOB", "bOb", "Bob"])
def test_a_username_is_taken_whatever_its_case(app: Flask, second: str) -> None:
    with app.app_context():
        bob = new_user("Bob")
        with pytest.raises(DuplicateUser) as raised:
            models.create_user(second, "other@example.com", PASSWORD_HASH)
        assert raised.value.field == "username"
        assert user_count() == 1
        assert models.get_user_by_login(second) == bob
        assert bob.username == "Bob"  # shown as typed, compared case-folded


def test_usernames_are_compared_by_unicode_case_folding(app: Flask) -> None:
    with app.app_context():
        new_user("Straße", "strasse@example.com")
        with pytest.raises(DuplicateUser):
            new_user("STRASSE", "other@example.com")
        assert models.username_taken("strasse")


def test_the_database_refuses_a_second_user_with_the_same_username_key(app: Flask) -> None:
    with app.app_context():
        new_user("Bob")
        with pytest.raises(IntegrityError):
            insert_raw("bob", "bob", "someone-else@example.com")
        assert user_count() == 1


@pytest.mark.parametrize(
    "second", ["carol@example.com", "CAROL@Example.COM", " carol@example.com "]
)
def test_an_email_is_taken_whatever_its_case(app: Flask, second: str) -> None:
    with app.app_context():
        carol = new_user("carol", "Carol@Example.com")
        assert carol.email == "carol@example.com"
        with pytest.raises(DuplicateUser) as raised:
            models.create_user("carol2", second, PASSWORD_HASH)
        assert raised.value.field == "email"
        assert user_count() == 1


@pytest.mark.parametrize("email", ["carol@example.com"])
def test_the_database_refuses_a_second_user_with_the_same_email(app: Flask, email: str) -> None:
    """The unique index compares stored emails exactly (binary collation, so "josé" is not
    "jose"); case is folded before storing, which the test above checks."""
    with app.app_context():
        new_user("carol")
        with pytest.raises(IntegrityError):
            insert_raw("carol2", "carol2", email)
        assert user_count() == 1


def test_changing_to_another_users_email_is_refused(app: Flask) -> None:
    with app.app_context():
        alice, bob = new_user("alice"), new_user("bob")
        with pytest.raises(DuplicateUser):
            models.update_email(alice.id, "BOB@example.com")
        models.update_email(bob.id, "Bob@Example.com")  # one's own address, another case
        assert models.get_user(alice.id).email == "alice@example.com"  # type: ignore[union-attr]
        assert models.get_user(bob.id).email == "bob@example.com"  # type: ignore[union-attr]


# -- the last active admin ---------------------------------------------------------------------


def flags(user_id: int) -> tuple[bool, bool]:
    user = models.get_user(user_id)
    assert user is not None
    return user.is_active, user.is_admin


@pytest.mark.parametrize(
    "change", [{"is_admin": False}, {"is_active": False}, {"is_active": False, "is_admin": False}]
)
def test_the_last_active_admin_cannot_be_demoted_or_deactivated(
    app: Flask, change: dict[str, bool]
) -> None:
    with app.app_context():
        boss = new_user("boss", is_admin=True).id
        retired = new_user("retired", is_admin=True).id
        models.set_flags(retired, is_active=False)  # a deactivated admin does not count
        with pytest.raises(LastAdminError):
            models.set_flags(boss, **change)
        assert flags(boss) == (True, True)
        with pytest.raises(LastAdminError):
            models.delete_user(boss)
        assert models.get_user(boss) is not None


def test_an_admin_can_step_down_while_another_active_admin_remains(app: Flask) -> None:
    with app.app_context():
        boss, erin = new_user("boss", is_admin=True).id, new_user("erin", is_admin=True).id
        models.set_flags(boss, is_admin=False)
        assert flags(boss) == (True, False)
        # Now erin is the last one.
        with pytest.raises(LastAdminError):
            models.set_flags(erin, is_active=False)
        models.set_flags(boss, is_admin=True)
        models.set_flags(erin, is_active=False)
        assert flags(erin) == (False, True)
        models.delete_user(erin)
        assert models.get_user(erin) is None


def test_changes_that_keep_the_last_admin_are_allowed(app: Flask) -> None:
    with app.app_context():
        boss = new_user("boss", is_admin=True).id
        retired = new_user("retired", is_admin=True).id
        alice = new_user("alice").id
        models.set_flags(boss, is_active=True, is_admin=True)
        models.set_flags(retired, is_active=False)
        models.set_flags(retired, is_admin=False)  # not an active admin: no protection needed
        models.set_flags(alice, is_active=False)
        models.set_flags(987654, is_active=False)  # no such user: nothing to do
        assert [flags(i) for i in (boss, retired, alice)] == [
            (True, True),
            (False, False),
            (False, False),
        ]


# -- password-reset tokens --------------------------------------------------------------------


def token_hash() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def test_a_reset_token_works_once(app: Flask) -> None:
    with app.app_context():
        alice = new_user("alice").id
        digest = token_hash()
        models.create_reset_token(alice, digest, timedelta(hours=1))
        assert models.reset_token_user(digest) == alice  # looking does not use it up
        assert models.reset_token_user(digest) == alice
        assert models.consume_reset_token(digest) == alice
        assert models.consume_reset_token(digest) is None
        assert models.reset_token_user(digest) is None
        assert models.consume_reset_token(token_hash()) is None  # never issued


def test_a_reset_token_expires(app: Flask) -> None:
    with app.app_context():
        alice = new_user("alice").id
        digest = token_hash()
        models.create_reset_token(alice, digest, timedelta(seconds=1))
        assert models.reset_token_user(digest) == alice
        time.sleep(1.2)
        assert models.reset_token_user(digest) is None
        assert models.consume_reset_token(digest) is None


def test_a_new_reset_token_voids_the_earlier_one(app: Flask) -> None:
    with app.app_context():
        alice, bob = new_user("alice").id, new_user("bob").id
        first, second, bobs = token_hash(), token_hash(), token_hash()
        models.create_reset_token(alice, first, timedelta(hours=1))
        models.create_reset_token(bob, bobs, timedelta(hours=1))
        models.create_reset_token(alice, second, timedelta(hours=1))
        assert models.consume_reset_token(first) is None
        assert models.consume_reset_token(second) == alice
        assert models.consume_reset_token(bobs) == bob  # other users' links are untouched


# -- API keys -----------------------------------------------------------------------------------


def secret_of(full_key: str) -> str:
    return full_key.split("_", 2)[2]


@pytest.fixture
def alice_key(app: Flask) -> Any:
    """alice and one API key of hers: (user, key, full key string)."""
    with app.app_context():
        alice = new_user("alice")
        key, full = apikeys.create_key(alice.id, "  laptop  ")
    return alice, key, full


def test_a_new_key_has_the_documented_shape(app: Flask, alice_key: Any) -> None:
    alice, key, full = alice_key
    match = re.fullmatch(r"fmk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})", full)
    assert match and match.group(1) == key.key_id
    assert key.user_id == alice.id and key.label == "laptop" and key.active
    with app.app_context():
        assert [k.key_id for k in apikeys.list_keys(alice.id)] == [key.key_id]


def test_the_full_key_authenticates_its_owner(app: Flask, alice_key: Any) -> None:
    alice, key, full = alice_key
    with app.app_context():
        assert apikeys.get_key(key.id).last_used_at is None  # type: ignore[union-attr]
        assert apikeys.authenticate(full) == alice
        assert apikeys.authenticate(f"  {full}\n") == alice
        assert apikeys.get_key(key.id).last_used_at is not None  # type: ignore[union-attr]


def test_a_wrong_secret_is_refused(app: Flask, alice_key: Any) -> None:
    _, key, full = alice_key
    with app.app_context():
        _, other = apikeys.create_key(alice_key[0].id, "other")
        forged = f"fmk_{key.key_id}_{secrets.token_urlsafe(32)}"
        assert apikeys.authenticate(forged) is None
        # Another valid key's secret does not open this key id.
        assert apikeys.authenticate(f"fmk_{key.key_id}_{secret_of(other)}") is None
        assert apikeys.authenticate(full) is not None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda full: "",
        lambda full: "fmk_",
        lambda full: full[:-1],
        lambda full: full + "A",
        lambda full: full.replace("fmk_", "fmx_", 1),
        lambda full: full.upper(),
        lambda full: "Bearer " + full,
        lambda full: full.split("_")[1],
        lambda full: full.replace("_", "-"),
        lambda full: full + "\x00",
        lambda full: f"fmk_{'0' * 16}_{'A' * 43}",
    ],
    ids=[
        "empty",
        "prefix only",
        "truncated",
        "extended",
        "wrong prefix",
        "upper-cased",
        "with scheme",
        "key id only",
        "dashes",
        "nul byte",
        "unknown key id",
    ],
)
def test_a_malformed_or_unknown_key_is_refused(app: Flask, alice_key: Any, mangle: Any) -> None:
    with app.app_context():
        assert apikeys.authenticate(mangle(alice_key[2])) is None


def test_a_revoked_key_is_refused(app: Flask, alice_key: Any) -> None:
    alice, key, full = alice_key
    with app.app_context():
        _, kept = apikeys.create_key(alice.id, "desktop")
        assert apikeys.revoke_key(key.id, user_id=alice.id + 1000) is False  # not the owner
        assert apikeys.authenticate(full) == alice
        assert apikeys.revoke_key(key.id, user_id=alice.id) is True
        assert apikeys.revoke_key(key.id) is False  # already revoked
        assert apikeys.authenticate(full) is None
        assert apikeys.authenticate(kept) == alice
        assert apikeys.get_key(key.id).active is False  # type: ignore[union-attr]


def test_a_deactivated_users_key_is_refused(app: Flask, alice_key: Any) -> None:
    alice, _, full = alice_key
    with app.app_context():
        models.set_flags(alice.id, is_active=False)
        assert apikeys.authenticate(full) is None
        models.set_flags(alice.id, is_active=True)
        assert apikeys.authenticate(full) == models.get_user(alice.id)


def test_secret_for_gives_the_secret_for_hmac_until_the_key_is_revoked(
    app: Flask, alice_key: Any
) -> None:
    alice, key, full = alice_key
    with app.app_context():
        found = apikeys.secret_for(key.key_id)
        assert found is not None
        owner, secret = found
        assert owner == alice.id and secret == secret_of(full).encode()
        # What the TCP fast path does: both sides compute the same HMAC of a challenge.
        challenge = secrets.token_bytes(32)
        client_side = hmac.new(secret_of(full).encode(), challenge, hashlib.sha256).digest()
        assert hmac.compare_digest(
            hmac.new(secret, challenge, hashlib.sha256).digest(), client_side
        )
        assert apikeys.secret_for("0" * 16) is None
        apikeys.revoke_key(key.id)
        assert apikeys.secret_for(key.key_id) is None


def test_the_database_holds_only_a_hash_and_an_encrypted_copy_of_the_secret(
    app: Flask, alice_key: Any
) -> None:
    _, key, full = alice_key
    secret = secret_of(full)
    with app.app_context():
        row = db.fetch_one("SELECT * FROM api_keys WHERE id = %s", (key.id,))
    assert row is not None
    for column, value in row.items():
        assert secret not in str(value), f"{column} holds the secret"
        assert full not in str(value), f"{column} holds the whole key"
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert row["secret_encrypted"].startswith("gAAAAA")  # a Fernet token


def test_a_key_made_under_one_secret_key_cannot_be_decrypted_under_another(
    make_app: Any,
) -> None:
    before = make_app(SECRET_KEY=secrets.token_urlsafe(48))
    with before.app_context():
        alice = new_user("alice")
        key, full = apikeys.create_key(alice.id, "laptop")
        assert apikeys.secret_for(key.key_id) == (alice.id, secret_of(full).encode())
    after = make_app(SECRET_KEY=secrets.token_urlsafe(48))  # same database, rotated key
    with after.app_context():
        assert apikeys.get_key(key.id) is not None
        assert apikeys.secret_for(key.key_id) is None


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_two_admins_demoting_each_other_at_once_leave_one(app: Flask) -> None:
    """Stops two admins racing the last-admin rule (each demotes the other at the same moment)
    from leaving the site without an admin: the count and the change happen under a row lock.

    A third connection holds both rows until both demotions are inside their transactions,
    so the two always overlap; without the lock both counted two admins and went ahead.
    """
    import threading

    import pymysql

    from project.db import mysql_connect_args

    with app.app_context():
        ann, bob = new_user("ann", is_admin=True).id, new_user("bob", is_admin=True).id
    blocker = pymysql.connect(**mysql_connect_args(app.config["DATABASE"]))
    blocker.begin()
    with blocker.cursor() as cursor:
        cursor.execute("SELECT id FROM users WHERE id IN (%s, %s) FOR UPDATE", (ann, bob))
    outcomes: dict[int, str] = {}

    def demote(user_id: int) -> None:
        with app.app_context():
            try:
                models.set_flags(user_id, is_admin=False)
                outcomes[user_id] = "demoted"
            except LastAdminError:
                outcomes[user_id] = "refused"

    threads = [threading.Thread(target=demote, args=(user,)) for user in (ann, bob)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # both demotions are now waiting inside their transactions
    blocker.commit()
    blocker.close()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes.values()) == ["demoted", "refused"]
    with app.app_context():
        assert models.active_admin_count() == 1
