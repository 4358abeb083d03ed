"""The audit log as pages found by seeking, newest first, at any length.

Every admin action and security event (each failed second-factor code, too)
adds a row, so the log outgrows the user table. Like the user list
(:mod:`apps.accounts.listing`), a page is "the 50 entries past this one" in
(created_at, id) order, read from the index that fits the filter
(``audit_log_created``, ``audit_log_action`` or ``audit_log_target``, each
ending in created_at), and the count is exact below
:data:`listing.EXACT_COUNT_BELOW`, MariaDB's estimate above (:func:`listing.count_where`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apps.accounts.listing import Count, Cursor, count_where
from project.extensions import db

SORT = "created"  # the cursor's kind: (created_at, id)

_SELECT = (
    "SELECT a.id, a.action, a.detail, a.ip, a.created_at, a.actor_id, a.target_user_id,"
    " actor.username AS actor_name, target.username AS target_name"
    " FROM audit_log a LEFT JOIN users actor ON actor.id = a.actor_id"
    " LEFT JOIN users target ON target.id = a.target_user_id"
)


@dataclass(frozen=True)
class AuditPage:
    rows: list[dict[str, Any]]
    count: Count
    newer: Cursor | None  # link to the entries before (newer than) the first shown
    older: Cursor | None  # link to the entries after (older than) the last shown


def _filters(action: str, target_user_id: int | None) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if action:
        where.append("a.action = %s")
        params.append(action)
    if target_user_id:
        where.append("a.target_user_id = %s")
        params.append(target_user_id)
    return where, params


def _past(cursor: Cursor, older: bool) -> tuple[str, list[Any]]:
    less = "<" if older else ">"
    sql = f"(a.created_at {less} %s OR (a.created_at = %s AND a.id {less} %s))"
    return sql, [cursor.value, cursor.value, cursor.id]


def _read(where: list[str], params: list[Any], older: bool, limit: int) -> list[dict[str, Any]]:
    direction = "DESC" if older else "ASC"
    return db.fetch_all(
        f"{_SELECT} WHERE {' AND '.join(where) or '1 = 1'}"
        f" ORDER BY a.created_at {direction}, a.id {direction} LIMIT %s",
        [*params, limit],
    )


def _cursor(row: dict[str, Any]) -> Cursor:
    return Cursor(row["created_at"], int(row["id"]))


def count(action: str = "", target_user_id: int | None = None) -> Count:
    return count_where("audit_log a", *_filters(action, target_user_id))


def page(
    action: str = "",
    target_user_id: int | None = None,
    *,
    after: Cursor | None = None,
    before: Cursor | None = None,
    oldest: bool = False,
    per_page: int = 50,
) -> AuditPage:
    """Entries newest first: the first page, or those *after* (older than) or *before* a cursor.

    *oldest* gives the last page. Going back past the newest entry gives a full first page.
    """
    where, params = _filters(action, target_user_id)

    def read(cursor: Cursor | None, older: bool) -> list[dict[str, Any]]:
        extra, extra_params = _past(cursor, older) if cursor else ("", [])
        conditions = [*where, extra] if extra else where
        return _read(conditions, [*params, *extra_params], older, per_page + 1)

    if before is not None or oldest:
        found = read(before, older=False)
        if oldest or len(found) > per_page:
            rows = list(reversed(found[:per_page]))
            return _page(rows, action, target_user_id, len(found) <= per_page, oldest)
    start = after if before is None and not oldest else None
    found = read(start, older=True)
    rows = found[:per_page]
    at_start = start is None or not rows or not _any_past(where, params, _cursor(rows[0]))
    return _page(rows, action, target_user_id, at_start, len(found) <= per_page)


def _any_past(where: list[str], params: list[Any], cursor: Cursor) -> bool:
    """Whether an entry newer than *cursor* matches (no ORDER BY: any index may answer)."""
    extra, extra_params = _past(cursor, older=False)
    found = db.fetch_value(
        f"SELECT 1 FROM audit_log a WHERE {' AND '.join([*where, extra])} LIMIT 1",
        [*params, *extra_params],
    )
    return found is not None


def _page(
    rows: list[dict[str, Any]],
    action: str,
    target_user_id: int | None,
    at_start: bool,
    at_end: bool,
) -> AuditPage:
    return AuditPage(
        rows=rows,
        count=count(action, target_user_id),
        newer=None if at_start or not rows else _cursor(rows[0]),
        older=None if at_end or not rows else _cursor(rows[-1]),
    )


def actions() -> list[str]:
    """Every action the log holds (read from the action index: one entry per action)."""
    return [
        r["action"] for r in db.fetch_all("SELECT DISTINCT action FROM audit_log ORDER BY action")
    ]
