"""The admin user list as pages that cost the same at a million users as at a hundred.

``LIMIT ... OFFSET n`` reads and throws away n rows, so the last page of a
million users read them all; ``COUNT(*)`` walked a whole index on every page.
Here pages are found by seeking (keyset pagination): a page is "the 50 rows
after this one in the sort order", where "this one" is the (sort value, id) of
a row the previous page showed, carried in the link as a :class:`Cursor`. Each
page is an index seek plus 51 rows, wherever it lies. The price is that pages
have no numbers: the pager goes to the first, previous, next and last page,
and a date field jumps to the users who joined on a day.

Counts are exact where that is cheap. On MariaDB/MySQL the optimizer's own
estimate of the matching rows (``EXPLAIN``) decides: below
:data:`EXACT_COUNT_BELOW` the rows are counted, above it the estimate is shown
as "about 1,000,000". SQLite (the embedded stack, for small sites) always counts.

NULLs (``last_login_at`` of users who never logged in) sort before every value
on both engines; the seek conditions below keep to that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from apps.accounts.models import USER_COLUMNS, User, username_key
from project.extensions import db

#: sort key in the URL -> (column, whether it may be NULL)
SORTS: dict[str, tuple[str, bool]] = {
    "username": ("username_key", False),
    "email": ("email", False),
    "created": ("created_at", False),
    "last_login": ("last_login_at", True),
    "id": ("id", False),
}
#: Columns with a unique index: the column alone orders the rows, no id to break ties.
#: "ORDER BY username_key, id" is not read from username_key's unique index on MariaDB
#: (a filesort of every row: 1.4 s at a million users); "ORDER BY username_key" is.
UNIQUE_COLUMNS = frozenset({"username_key", "email", "id"})
#: Below this many estimated matches, the rows are counted exactly (a few ms at most).
EXACT_COUNT_BELOW = 10_000


@dataclass(frozen=True)
class Cursor:
    """A row's place in a sort order: its sort value and its id (which breaks ties)."""

    value: Any
    id: int

    def encode(self) -> str:
        if self.value is None:
            text = ""
        elif isinstance(self.value, datetime):
            text = self.value.isoformat()
        else:
            text = str(self.value)
        return f"{text}~{self.id}"

    @classmethod
    def decode(cls, text: str, sort: str) -> Cursor | None:
        """The cursor in a link, or None if it is not one (a hand-edited URL)."""
        value, sep, row_id = text.rpartition("~")
        if not sep or not row_id.isdigit() or len(text) > 600:
            return None
        column, nullable = SORTS[sort]
        if value == "":
            return cls(None, int(row_id)) if nullable else None
        if column.endswith("_at"):
            try:
                return cls(datetime.fromisoformat(value), int(row_id))
            except ValueError:
                return None
        if column == "id":
            return cls(int(value), int(row_id)) if value.isdigit() else None
        return cls(value, int(row_id))

    @classmethod
    def of(cls, user: User, sort: str) -> Cursor:
        column = SORTS[sort][0]
        value = {
            "username_key": username_key(user.username),
            "email": user.email,
            "created_at": user.created_at,
            "last_login_at": user.last_login_at,
            "id": user.id,
        }[column]
        return cls(value, user.id)


@dataclass(frozen=True)
class UserQuery:
    search: str = ""
    active: bool | None = None
    admin: bool | None = None
    sort: str = "created"
    descending: bool = True
    after: Cursor | None = None  # the page of rows that follow this one
    before: Cursor | None = None  # the page of rows that precede this one
    joined: date | None = None  # sort "created" only: start at the users who joined that day
    last: bool = False  # the last page
    per_page: int = 50


@dataclass(frozen=True)
class Count:
    value: int
    exact: bool

    def __str__(self) -> str:
        if self.exact:
            return f"{self.value:,}"
        digits = len(str(self.value))
        rounded = round(self.value, -max(0, digits - 2))  # two significant digits
        return f"about {rounded:,}"


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    count: Count
    newer: Cursor | None  # the link to the previous page: rows before this cursor
    older: Cursor | None  # the link to the next page: rows after this cursor
    at_start: bool
    at_end: bool


def _escape_like(text: str) -> str:
    """Make LIKE's wildcards literal; '!' escapes because backslash differs between engines."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _filters(query: UserQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if query.search:
        # username_key is case-folded, email lower-cased: match each as it is stored.
        where.append("(username_key LIKE %s ESCAPE '!' OR email LIKE %s ESCAPE '!')")
        params += [
            _escape_like(query.search.casefold()) + "%",
            _escape_like(query.search.lower()) + "%",
        ]
    if query.active is not None:
        where.append("is_active = %s")
        params.append(query.active)
    if query.admin is not None:
        where.append("is_admin = %s")
        params.append(query.admin)
    return where, params


def _condition(where: list[str]) -> str:
    return " AND ".join(where) or "1 = 1"


def _beyond(sort: str, cursor: Cursor, descending: bool) -> tuple[str, list[Any]]:
    """Rows strictly past *cursor* in the order (sort column, id), both descending or not.

    Written as ORs of simple comparisons, not ``(a, b) < (x, y)``: MariaDB turns the
    former, not the latter, into a range on the index.
    """
    column, nullable = SORTS[sort]
    less = "<" if descending else ">"
    if column in UNIQUE_COLUMNS:  # no ties (for "id" the value is the id)
        return f"{column} {less} %s", [cursor.value]
    if cursor.value is None:  # NULLs come first in ascending order, last in descending
        if descending:
            return f"({column} IS NULL AND id < %s)", [cursor.id]
        return f"(({column} IS NULL AND id > %s) OR {column} IS NOT NULL)", [cursor.id]
    sql = f"({column} {less} %s OR ({column} = %s AND id {less} %s)"
    params = [cursor.value, cursor.value, cursor.id]
    if nullable and descending:
        sql += f" OR {column} IS NULL"
    return sql + ")", params


def _index_hint(query: UserQuery) -> str:
    """``FORCE INDEX`` of the (flag, created_at) index a filtered list in join order reads.

    Given ``is_active = 1 AND created_at < X ORDER BY created_at DESC LIMIT 51``,
    MariaDB 10.11 reads users_active_created as a "ref" on is_active alone, from the
    newest row down to X: a page from the middle of a million users read 470,000 rows
    (1.4 s). Forced to that index it seeks to X (a range on both columns): 51 rows.
    Likewise "any row past X?" with both flags (93 ms). With both flags, the admin
    index if admins are asked for (few), else the active one. Not with a search: the
    search's own indexes find its few matches faster.
    """
    if db.engine == "sqlite" or query.sort != "created" or query.search:
        return ""
    if query.admin:
        return " FORCE INDEX (users_admin_created)"
    if query.active is not None:
        return " FORCE INDEX (users_active_created)"
    if query.admin is not None:
        return " FORCE INDEX (users_admin_created)"
    return ""


def _select(
    where: list[str], params: list[Any], sort: str, descending: bool, limit: int, hint: str = ""
) -> list[User]:
    column = SORTS[sort][0]
    direction = "DESC" if descending else "ASC"
    order = f"{column} {direction}"
    if column not in UNIQUE_COLUMNS:
        order += f", id {direction}"
    rows = db.fetch_all(
        f"SELECT {USER_COLUMNS} FROM users{hint} WHERE {_condition(where)}"
        f" ORDER BY {order} LIMIT %s",
        [*params, limit],
    )
    return [User.from_row(row) for row in rows]


def _start_of_day(query: UserQuery) -> Cursor | None:
    """The cursor that makes "after" begin with the users who joined on ``query.joined``."""
    if query.joined is None or query.sort != "created":
        return None
    day = datetime.combine(query.joined, time())
    return Cursor(day + timedelta(days=1), 0) if query.descending else Cursor(day, 0)


def count_users(query: UserQuery) -> Count:
    """How many users match the query's search and filters: exact when cheap, else estimated."""
    return _count(*_filters(query))


def _count(where: list[str], params: list[Any]) -> Count:
    condition = _condition(where)
    if db.engine != "sqlite":
        plan = db.fetch_all(f"EXPLAIN SELECT id FROM users WHERE {condition}", params)
        estimate = max((int(row.get("rows") or 0) for row in plan), default=0)
        if estimate >= EXACT_COUNT_BELOW:
            return Count(estimate, exact=False)
    value = db.fetch_value(f"SELECT COUNT(*) FROM users WHERE {condition}", params)
    return Count(int(value or 0), exact=True)


def list_users(query: UserQuery) -> UserPage:
    """One page of the users matching the query, the links around it, and how many match."""
    where, params = _filters(query)
    sort, descending, size = query.sort, query.descending, query.per_page
    hint = _index_hint(query)

    def seek(cursor: Cursor | None, backward: bool, limit: int) -> list[User]:
        order = descending != backward
        if cursor is None:
            return _select(where, params, sort, order, limit, hint)
        sql, cursor_params = _beyond(sort, cursor, order)
        return _select([*where, sql], [*params, *cursor_params], sort, order, limit, hint)

    def more(cursor: Cursor, backward: bool) -> bool:
        """Whether any row lies past *cursor*: no ORDER BY, so the cheapest index answers.

        Ordered, the optimizer walks the sort column's index hoping to meet a match
        soon; for a search with no match past the cursor that read every row (3 s).
        """
        sql, cursor_params = _beyond(sort, cursor, descending != backward)
        found = db.fetch_value(
            f"SELECT 1 FROM users{hint} WHERE {_condition([*where, sql])} LIMIT 1",
            [*params, *cursor_params],
        )
        return found is not None

    found = seek(query.before, True, size + 1) if query.before or query.last else []
    if found and (query.last or len(found) > size):  # a page found going backwards
        users = list(reversed(found[:size]))
        at_start = len(found) <= size
        at_end = query.last or not more(Cursor.of(users[-1], sort), False)
    else:  # forwards; also the first page when going back ran out of rows
        start = None if query.before or query.last else query.after or _start_of_day(query)
        found = seek(start, False, size + 1)
        users = found[:size]
        at_end = len(found) <= size
        at_start = start is None or not users or not more(Cursor.of(users[0], sort), True)
    return UserPage(
        users=users,
        count=_count(where, params),
        newer=None if at_start or not users else Cursor.of(users[0], sort),
        older=None if at_end or not users else Cursor.of(users[-1], sort),
        at_start=at_start,
        at_end=at_end,
    )
