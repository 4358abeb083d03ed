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

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import current_app

from apps.accounts.models import USER_COLUMNS, User, username_key
from project.db import OperationalError
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


def _search_terms(search: str) -> list[tuple[str, str]]:
    """(column, LIKE pattern) for each column a search looks in, matched as it is stored.

    username_key is case-folded, email lower-cased. Usernames have no "@", so a
    search with one looks at emails only.
    """
    terms = [("email", _escape_like(search.lower()) + "%")]
    if "@" not in search:
        terms.insert(0, ("username_key", _escape_like(search.casefold()) + "%"))
    return terms


def _search_clause(search: str) -> tuple[str, list[Any]]:
    terms = _search_terms(search)
    sql = " OR ".join(f"{column} LIKE %s ESCAPE '!'" for column, _ in terms)
    return f"({sql})", [pattern for _, pattern in terms]


def _flag_filters(query: UserQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if query.active is not None:
        where.append("is_active = %s")
        params.append(query.active)
    if query.admin is not None:
        where.append("is_admin = %s")
        params.append(query.admin)
    return where, params


def _filters(query: UserQuery) -> tuple[list[str], list[Any]]:
    """The WHERE of the query's search and flags, as one list of conditions."""
    where, params = _flag_filters(query)
    if query.search:
        clause, search_params = _search_clause(query.search)
        return [clause, *where], [*search_params, *params]
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


def _order(column: str, descending: bool) -> str:
    direction = "DESC" if descending else "ASC"
    order = f"{column} {direction}"
    if column not in UNIQUE_COLUMNS:
        order += f", id {direction}"
    return order


def _select(
    where: list[str], params: list[Any], sort: str, descending: bool, limit: int, hint: str = ""
) -> list[User]:
    rows = db.fetch_all(
        f"SELECT {USER_COLUMNS} FROM users{hint} WHERE {_condition(where)}"
        f" ORDER BY {_order(SORTS[sort][0], descending)} LIMIT %s",
        [*params, limit],
    )
    return [User.from_row(row) for row in rows]


# -- searches ----------------------------------------------------------------------------------
#
# "username or email starts with X" as one query, with OR, defeats MariaDB: it cannot
# estimate the matches, and either walks the sort order's index hoping to meet them
# soon (3 s at a million users when they all joined long ago) or reads every matching
# row to sort them. So each searched column is asked on its own, from a covering index
# (migration 0007): "the first 51 matches of username_key LIKE 'x%' in this order" is a
# range of index entries sorted in memory, never a row read (or, sorted by the searched
# column itself, 51 entries read in order). The two short lists are merged here, and
# the page's rows fetched by id. The cost follows the number of matches, not the table.

SEARCH_INDEXES = {"username_key": "users_search_username", "email": "users_search_email"}
#: The index each order is read from when a search is walked in that order.
ORDER_INDEXES = {
    "username_key": "users_username_key",
    "email": "users_email",
    "created_at": "users_created",
    "last_login_at": "users_last_login",
    "id": "PRIMARY",
}
#: Rows a walk in the page's order may read before giving up on meeting a page of matches.
WALK_ROWS = 10_000


def _search_hint(column: str) -> str:
    return "" if db.engine == "sqlite" else f" FORCE INDEX ({SEARCH_INDEXES[column]})"


def _in_order(value: Any, row_id: int) -> tuple[Any, ...]:
    """The SQL order of (sort value, id) in Python: NULLs first, as on both engines."""
    return (value is not None, value if value is not None else 0, row_id)


def _search_select(
    query: UserQuery, extra: list[str], extra_params: list[Any], descending: bool, limit: int
) -> list[User]:
    """The first *limit* users matching the search and filters (and *extra*), in order."""
    column = SORTS[query.sort][0]
    flags, flag_params = _flag_filters(query)
    found: dict[int, Any] = {}
    for search_column, pattern in _search_terms(query.search):
        where = [f"{search_column} LIKE %s ESCAPE '!'", *flags, *extra]
        rows = db.fetch_all(
            f"SELECT id, {column} AS sort_value FROM users{_search_hint(search_column)}"
            f" WHERE {_condition(where)} ORDER BY {_order(column, descending)} LIMIT %s",
            [pattern, *flag_params, *extra_params, limit],
        )
        found.update((int(row["id"]), row["sort_value"]) for row in rows)
    ids = sorted(found, key=lambda i: _in_order(found[i], i), reverse=descending)[:limit]
    if not ids:
        return []
    rows = db.fetch_all(
        f"SELECT {USER_COLUMNS} FROM users WHERE id IN ({', '.join(['%s'] * len(ids))})", ids
    )
    users = {int(row["id"]): User.from_row(row) for row in rows}
    return [users[i] for i in ids if i in users]


def _walk_hint(query: UserQuery) -> str:
    flags_hint = _index_hint(replace(query, search=""))
    return flags_hint or f" FORCE INDEX ({ORDER_INDEXES[SORTS[query.sort][0]]})"


def _search_walk(
    query: UserQuery, extra: list[str], extra_params: list[Any], descending: bool, limit: int
) -> list[User] | None:
    """A search with many matches, read in the page's order until a page of them is met.

    Where one user in a hundred matches, the sort order's own index meets a page of
    them within a few thousand rows: faster than sorting the matches (a search for
    one letter matches tens of thousands). But matches may all lie at the far end of
    that order (a prefix every early user shares), so the walk stops after
    :data:`WALK_ROWS` rows (MariaDB's ``LIMIT ... ROWS EXAMINED``); None then, and the
    matches are sorted after all.
    """
    where, params = _filters(query)
    try:
        rows = db.fetch_all(
            f"SELECT {USER_COLUMNS} FROM users{_walk_hint(query)}"
            f" WHERE {_condition([*where, *extra])}"
            f" ORDER BY {_order(SORTS[query.sort][0], descending)} LIMIT %s ROWS EXAMINED %s",
            [*params, *extra_params, limit, WALK_ROWS],
        )
    except OperationalError as exc:
        # MariaDB chose to sort rather than walk (a small table): the cap ended the sort.
        if "LIMIT ROWS EXAMINED" not in str(exc):
            raise
        return None
    return [User.from_row(row) for row in rows] if len(rows) == limit else None


def _search_has_any(query: UserQuery, extra: list[str], extra_params: list[Any]) -> bool:
    flags, flag_params = _flag_filters(query)
    for search_column, pattern in _search_terms(query.search):
        where = [f"{search_column} LIKE %s ESCAPE '!'", *flags, *extra]
        found = db.fetch_value(
            f"SELECT 1 FROM users{_search_hint(search_column)} WHERE {_condition(where)} LIMIT 1",
            [pattern, *flag_params, *extra_params],
        )
        if found is not None:
            return True
    return False


def _search_count(query: UserQuery) -> Count:
    """How many users the search finds: counted up to :data:`EXACT_COUNT_BELOW`, then guessed.

    The username matches, then the email matches whose username does not match, are
    counted from the covering indexes (each holds the other column) until the sum
    reaches the limit: below it the sum is exact; at it, MariaDB's estimate of the
    column's matches is shown as one. (The email count alone could read every entry
    of a prefix both columns share, to find none: it only runs when the first is small.)
    """
    flags, flag_params = _flag_filters(query)
    terms = _search_terms(query.search)
    total = 0
    for n, (search_column, pattern) in enumerate(terms):
        hint = _search_hint(search_column)
        where = [f"{search_column} LIKE %s ESCAPE '!'", *flags]
        params = [pattern, *flag_params]
        for other, other_pattern in terms[:n]:  # counted already
            where.append(f"{other} NOT LIKE %s ESCAPE '!'")
            params.append(other_pattern)
        condition = _condition(where)
        counted = int(
            db.fetch_value(
                f"SELECT COUNT(*) FROM (SELECT 1 FROM users{hint} WHERE {condition} LIMIT %s) m",
                [*params, EXACT_COUNT_BELOW],
            )
            or 0
        )
        total += counted
        if total >= EXACT_COUNT_BELOW:  # many: the rest would be read for nothing
            guess = _estimate(f"SELECT id FROM users{hint} WHERE {condition}", params)
            return Count(max(guess, total), exact=False)
    return Count(total, exact=True)


def _estimate(sql: str, params: list[Any]) -> int:
    """MariaDB's guess of the rows *sql* returns."""
    plan = db.fetch_all(f"EXPLAIN {sql}", params)
    return max((int(row.get("rows") or 0) for row in plan), default=0)


def _is_mariadb() -> bool:
    """Whether ``LIMIT ... ROWS EXAMINED`` can be said (MariaDB; not MySQL, not SQLite)."""
    if db.engine != "mysql":
        return False
    known = current_app.extensions.get("accounts.mariadb")
    if known is None:
        known = "mariadb" in str(db.fetch_value("SELECT VERSION()")).lower()
        current_app.extensions["accounts.mariadb"] = known
    return bool(known)


def _start_of_day(query: UserQuery) -> Cursor | None:
    """The cursor that makes "after" begin with the users who joined on ``query.joined``."""
    if query.joined is None or query.sort != "created":
        return None
    day = datetime.combine(query.joined, time())
    return Cursor(day + timedelta(days=1), 0) if query.descending else Cursor(day, 0)


def count_users(query: UserQuery) -> Count:
    """How many users match the query's search and filters: exact when cheap, else estimated."""
    if db.engine != "sqlite" and query.search:
        return _search_count(query)
    return count_where("users", *_filters(query))


def count_where(source: str, where: list[str], params: list[Any]) -> Count:
    """Rows of *source* (a table, with its alias) matching *where*: exact when cheap.

    MariaDB's estimate (``EXPLAIN``) decides: from :data:`EXACT_COUNT_BELOW` on it is
    shown as one; below, the rows are counted. SQLite always counts.
    """
    condition = _condition(where)
    if db.engine != "sqlite":
        estimate = _estimate(f"SELECT 1 FROM {source} WHERE {condition}", params)
        if estimate >= EXACT_COUNT_BELOW:
            return Count(estimate, exact=False)
    value = db.fetch_value(f"SELECT COUNT(*) FROM {source} WHERE {condition}", params)
    return Count(int(value or 0), exact=True)


def list_users(query: UserQuery) -> UserPage:
    """One page of the users matching the query, the links around it, and how many match."""
    where, params = _filters(query)
    sort, descending, size = query.sort, query.descending, query.per_page
    hint = _index_hint(query)
    count = count_users(query)
    walk = bool(query.search) and not count.exact and _is_mariadb()

    def seek(cursor: Cursor | None, backward: bool, limit: int) -> list[User]:
        order = descending != backward
        sql, cursor_params = _beyond(sort, cursor, order) if cursor else ("", [])
        extra = [sql] if sql else []
        if query.search:
            walked = _search_walk(query, extra, cursor_params, order, limit) if walk else None
            return (
                walked
                if walked is not None
                else _search_select(query, extra, cursor_params, order, limit)
            )
        return _select([*where, *extra], [*params, *cursor_params], sort, order, limit, hint)

    def more(cursor: Cursor, backward: bool) -> bool:
        """Whether any row lies past *cursor*: no ORDER BY, so the cheapest index answers.

        Ordered, the optimizer walks the sort column's index hoping to meet a match
        soon; for a search with no match past the cursor that read every row (3 s).
        """
        sql, cursor_params = _beyond(sort, cursor, descending != backward)
        if query.search:
            return _search_has_any(query, [sql], cursor_params)
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
        count=count,
        newer=None if at_start or not users else Cursor.of(users[0], sort),
        older=None if at_end or not users else Cursor.of(users[-1], sort),
        at_start=at_start,
        at_end=at_end,
    )
