"""Admin searches page in the right order whichever plan finds them, on both stacks.

A search asks each column on its own and merges (``listing._search_select``);
with many matches on MariaDB it first walks the sort order's index, capped at
``WALK_ROWS`` rows, and falls back to the merge when the cap is hit. Every plan
must list exactly the users a plain reading of the rules gives, in order,
page after page, both ways, with flags, and count users matching twice once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask

from apps.accounts import listing, models
from project.extensions import db
from tests.conftest import PASSWORD_HASH

PLANS = {
    "merge": {},  # few matches: each column from its covering index, merged
    "walk": {"EXACT_COUNT_BELOW": 5},  # many: the sort order's index walked (MariaDB)
    "walk-cut-short": {"EXACT_COUNT_BELOW": 5, "WALK_ROWS": 3},  # the walk gives up
}


def people() -> list[dict[str, Any]]:
    """90 users: 'ann' starts the username of some, the email of others, both of a few."""
    rows = []
    for n in range(90):
        kind = n % 3
        username = [f"ann{n:03d}", f"bob{n:03d}", f"ann{n:03d}x"][kind]
        email = [f"zed{n:03d}@example.com", f"ann{n:03d}@example.com", f"ann{n:03d}x@ex.org"][kind]
        rows.append(
            {
                "username": username,
                "email": email,
                "created_at": datetime(2026, 1, 1) + timedelta(hours=(n * 37) % 90),
                "last_login_at": None if n % 4 == 0 else datetime(2026, 2, 1, n % 24),
                "is_active": n % 5 != 0,
                "is_admin": n % 7 == 0,
            }
        )
    return rows


def insert(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        user = models.create_user(row["username"], row["email"], PASSWORD_HASH)
        db.execute(
            "UPDATE users SET created_at = %s, last_login_at = %s, is_active = %s, is_admin = %s"
            " WHERE id = %s",
            (row["created_at"], row["last_login_at"], row["is_active"], row["is_admin"], user.id),
        )
        row["id"] = user.id


def expected(rows: list[dict[str, Any]], query: listing.UserQuery) -> list[str]:
    column = {
        "username": "username",
        "email": "email",
        "created": "created_at",
        "last_login": "last_login_at",
    }[query.sort]
    found = [
        r
        for r in rows
        if (r["username"].startswith(query.search) or r["email"].startswith(query.search))
        and (query.active is None or r["is_active"] == query.active)
        and (query.admin is None or r["is_admin"] == query.admin)
    ]
    unique = column in ("username", "email")

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        value = r[column]
        return (value is not None, value if value is not None else 0, 0 if unique else r["id"])

    return [r["username"] for r in sorted(found, key=key, reverse=query.descending)]


def walk_forward(query: listing.UserQuery) -> tuple[list[str], listing.Count]:
    page = listing.list_users(query)
    listed = [u.username for u in page.users]
    while page.older is not None:
        page = listing.list_users(listing.UserQuery(**{**query.__dict__, "after": page.older}))
        listed += [u.username for u in page.users]
    return listed, page.count


def walk_backward(query: listing.UserQuery) -> list[str]:
    page = listing.list_users(listing.UserQuery(**{**query.__dict__, "last": True}))
    listed = [u.username for u in page.users]
    while page.newer is not None:
        page = listing.list_users(listing.UserQuery(**{**query.__dict__, "before": page.newer}))
        # Past the start, "previous" shows the whole first page: it may overlap.
        listed = [u.username for u in page.users if u.username not in listed] + listed
    return listed


@pytest.mark.parametrize("plan", PLANS)
def test_searches_list_every_match_once_in_order_whichever_plan(
    app: Flask, plan: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in PLANS[plan].items():
        monkeypatch.setattr(listing, name, value)
    rows = people()
    with app.app_context():
        insert(rows)
        for sort in ("created", "username", "email", "last_login"):
            for descending in (True, False):
                for flags in ({}, {"active": False}, {"active": True, "admin": False}):
                    query = listing.UserQuery(
                        search="ann", sort=sort, descending=descending, per_page=7, **flags
                    )
                    want = expected(rows, query)
                    listed, count = walk_forward(query)
                    assert listed == want, (sort, descending, flags)
                    assert walk_backward(query) == want, (sort, descending, flags)
                    if plan == "merge":
                        assert count == listing.Count(len(want), exact=True)


def test_a_user_matching_by_username_and_email_is_counted_once(app: Flask) -> None:
    rows = people()
    with app.app_context():
        insert(rows)
        both = sum(
            1 for r in rows if r["username"].startswith("ann") and r["email"].startswith("ann")
        )
        assert both > 0
        count = listing.count_users(listing.UserQuery(search="ann"))
        assert count == listing.Count(len(expected(rows, listing.UserQuery(search="ann"))), True)


def test_a_search_with_an_at_sign_looks_at_emails_only(app: Flask) -> None:
    with app.app_context():
        insert(people())
        page = listing.list_users(listing.UserQuery(search="ann001@", sort="username"))
        assert [u.email for u in page.users] == ["ann001@example.com"]


def test_on_mariadb_a_search_reads_each_column_from_its_covering_index(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []
    method = db.fetch_all
    monkeypatch.setattr(
        db, "fetch_all", lambda sql, *a, **k: statements.append(sql) or method(sql, *a, **k)
    )
    with app.app_context():
        insert(people())
        listing.list_users(listing.UserQuery(search="ann", active=False, sort="username"))
    pages = [s for s in statements if "AS sort_value" in s]
    assert len(pages) == 2 and not any(" OR " in s for s in pages)
    if app.config["DATABASE"].engine == "mysql":
        assert "FORCE INDEX (users_search_username)" in pages[0]
        assert "FORCE INDEX (users_search_email)" in pages[1]
