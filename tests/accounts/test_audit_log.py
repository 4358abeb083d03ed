"""The audit log pages by seeking, both ways, with its filters, on both stacks."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient

from apps.accounts import audit_log, models
from project.extensions import db
from tests.accounts.test_admin import admin, audit_rows, boss, pager_href  # noqa: F401


def fill(count: int, target: int) -> None:
    """*count* entries "test.entry" with details 000... one second apart (some at the same time)."""
    for n in range(count):
        models.audit("test.entry", actor_id=None, target_user_id=target, detail=f"{n:03d}")
    rows = db.fetch_all("SELECT id FROM audit_log WHERE action = 'test.entry' ORDER BY id")
    for n, row in enumerate(rows):
        when = datetime(2026, 3, 1) + timedelta(seconds=n - n % 3)  # ties broken by id
        db.execute("UPDATE audit_log SET created_at = %s WHERE id = %s", (when, row["id"]))


def details(page: str) -> list[str]:
    from tests.accounts.test_admin import table_rows

    return [row[4] for row in table_rows(page) if len(row) == 6]


def newest_first(numbers: range) -> list[str]:
    return [f"{n:03d}" for n in reversed(numbers)]


def test_the_audit_log_pages_newest_first_and_back(
    app: Flask,
    admin: FlaskClient,  # noqa: F811
    boss: int,  # noqa: F811
) -> None:
    with app.app_context():
        fill(120, boss)
    base = "/admin/audit/?action=test.entry"
    first = admin.get(base).get_data(as_text=True)
    assert details(first) == newest_first(range(70, 120))
    assert "120 entries" in first
    assert "Newer" not in first

    second = admin.get(pager_href(first, "Older &rsaquo;")).get_data(as_text=True)
    assert details(second) == newest_first(range(20, 70))
    third = admin.get(pager_href(second, "Older &rsaquo;")).get_data(as_text=True)
    assert details(third) == newest_first(range(20))
    assert "Older" not in third
    assert "action=test.entry" in pager_href(third, "&lsaquo; Newer")
    back = admin.get(pager_href(third, "&lsaquo; Newer")).get_data(as_text=True)
    assert details(back) == newest_first(range(20, 70))

    oldest = admin.get(pager_href(first, "Oldest &raquo;")).get_data(as_text=True)
    assert details(oldest) == newest_first(range(50))
    newer = admin.get(pager_href(oldest, "&lsaquo; Newer")).get_data(as_text=True)
    assert details(newer) == newest_first(range(50, 100))
    again = admin.get(pager_href(newer, "&lsaquo; Newer")).get_data(as_text=True)
    assert details(again) == newest_first(range(70, 120))  # a full first page, not 20 rows
    assert "Newer" not in again


def test_a_broken_cursor_shows_the_first_page(
    app: Flask,
    admin: FlaskClient,  # noqa: F811
    boss: int,  # noqa: F811
) -> None:
    with app.app_context():
        fill(60, boss)
    for cursor in ("nonsense", "2026-13-01T00:00:00~5", "~", "x" * 700):
        page = admin.get(f"/admin/audit/?action=test.entry&after={cursor}")
        assert page.status_code == 200
        assert details(page.get_data(as_text=True)) == newest_first(range(10, 60))


def test_filters_by_user_page_too(app: Flask, admin: FlaskClient, boss: int) -> None:  # noqa: F811
    with app.app_context():
        fill(55, boss)
        other = models.create_user("other", "other@example.com", "!").id
        models.audit("test.entry", actor_id=None, target_user_id=other, detail="elsewhere")
        assert audit_log.count("test.entry", boss) == audit_log.Count(55, exact=True)
    rows = audit_rows(admin, f"user={boss}&action=test.entry")
    assert len(rows) == 50 and all(r["detail"] != "elsewhere" for r in rows)
