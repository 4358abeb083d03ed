"""Admin pages: only admins get in, the numbers are true, and every change is audited.

Each test drives the pages as a browser would (real login form, CSRF token read
from the page, redirects followed) and then looks at what a user would care
about: what the page says, what the database holds, and whether the affected
people are still logged in or can still use their API keys.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from apps.accounts import apikeys, audit_log, listing, models
from project.db import utcnow
from project.extensions import db
from tests.conftest import PASSWORD_HASH, csrf_token, free_port, log_in

ADMIN_IP = "198.51.100.7"
LAST_ADMIN = "The site must keep at least one active admin"


# -- helpers -------------------------------------------------------------------------------


def account(
    username: str,
    *,
    email: str | None = None,
    is_admin: bool = False,
    is_active: bool = True,
) -> int:
    """A user who can log in with PASSWORD; call inside an app context. Returns the id."""
    user = models.create_user(
        username, email or f"{username.lower()}@example.com", PASSWORD_HASH, is_admin=is_admin
    )
    if not is_active:
        models.set_flags(user.id, is_active=False)
    return user.id


def logged_in(app: Flask, login: str, ip: str = "127.0.0.1") -> FlaskClient:
    """A browser logged in through the login form."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    response = log_in(client, login)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def post(client: FlaskClient, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
    """A form POST carrying the session's CSRF token, as the page's form would send it."""
    return client.post(path, data={"csrf_token": csrf_token(client), **(data or {})}, **kw)


def whoami(client: FlaskClient) -> str | None:
    user: str | None = client.get("/_probe/whoami").json["user"]  # type: ignore[index]
    return user


def flashes(page: str) -> list[tuple[str, str]]:
    return [
        (category, html.unescape(text))
        for category, text in re.findall(r'<li class="flash flash-(\w+)">(.*?)</li>', page)
    ]


def _text(cell: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()


def table_rows(page: str) -> list[list[str]]:
    """The text of each cell of each row of the first table body on the page."""
    body = re.search(r"<tbody>(.*?)</tbody>", page, re.S)
    assert body, "the page has no table"
    return [
        [_text(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(1), re.S)
    ]


def listed_usernames(page: str) -> list[str]:
    """Usernames in the admin user list, in the order shown."""
    return [
        html.unescape(name)
        for name in re.findall(r'<td><a href="/admin/accounts/\d+">([^<]*)</a></td>', page)
    ]


def user(app: Flask, user_id: int) -> models.User | None:
    with app.app_context():
        return models.get_user(user_id)


def snapshot(app: Flask) -> dict[str, list[dict[str, Any]]]:
    """Every row an admin action could change."""
    tables = ("users", "api_keys", "audit_log", "password_reset_tokens")
    with app.app_context():
        return {t: db.fetch_all(f"SELECT * FROM {t} ORDER BY id") for t in tables}


def bearer(client: FlaskClient, key: str) -> Any:
    return client.get("/_probe/whoami", headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def boss(app: Flask) -> int:
    """The site's only admin."""
    with app.app_context():
        return account("boss", is_admin=True)


@pytest.fixture
def admin(app: Flask, boss: int) -> FlaskClient:
    """The admin's browser, connecting from ADMIN_IP."""
    return logged_in(app, "boss", ip=ADMIN_IP)


@pytest.fixture
def alice(app: Flask) -> int:
    """An ordinary user (request it after ``admin``, so that boss is the older account)."""
    with app.app_context():
        return account("alice")


def boss_and_alice(app: Flask, **alice_flags: bool) -> tuple[FlaskClient, int]:
    """On an app the test built itself: the only admin's browser, and alice's id."""
    with app.app_context():
        account("boss", is_admin=True)
        alice = account("alice", **alice_flags)
    return logged_in(app, "boss"), alice


# -- who may see the admin pages --------------------------------------------------------------

ROUTES = [
    ("GET", "/admin/", None),
    ("GET", "/admin/accounts/", None),
    ("GET", "/admin/accounts/{user}", None),
    ("GET", "/admin/audit/", None),
    ("POST", "/admin/accounts/bulk", {"action": "delete", "confirmed": "yes"}),
    ("POST", "/admin/accounts/{user}", {"email": "taken-over@example.com", "is_admin": "y"}),
    ("POST", "/admin/accounts/{user}/reset-link", {}),
    ("POST", "/admin/accounts/{user}/end-sessions", {}),
    ("POST", "/admin/accounts/{user}/keys/{key}/revoke", {}),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in ROUTES]


@pytest.fixture
def victim(app: Flask) -> dict[str, Any]:
    """An ordinary user with an API key and an open session: what an attacker would target."""
    with app.app_context():
        user_id = account("alice")
        key, full = apikeys.create_key(user_id, "laptop")
    return {
        "id": user_id,
        "key": key.id,
        "full_key": full,
        "client": logged_in(app, "alice"),
    }


def _request(
    client: FlaskClient, method: str, path: str, data: dict[str, Any] | None, victim: dict
) -> Any:
    url = path.format(user=victim["id"], key=victim["key"])
    if method == "GET":
        return client.get(url), url
    form = {**(data or {}), "user_ids": [str(victim["id"])]}
    return post(client, url, form), url


@pytest.mark.parametrize(("method", "path", "data"), ROUTES, ids=ROUTE_IDS)
def test_anonymous_visitors_are_sent_to_the_login_page_and_change_nothing(
    app: Flask, victim: dict, method: str, path: str, data: dict | None
) -> None:
    before = snapshot(app)
    response, url = _request(app.test_client(), method, path, data, victim)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/accounts/login"
    assert parse_qs(location.query)["next"] == [url]
    assert snapshot(app) == before
    assert whoami(victim["client"]) == "alice"


@pytest.mark.parametrize(("method", "path", "data"), ROUTES, ids=ROUTE_IDS)
def test_logged_in_non_admins_get_403_and_change_nothing(
    app: Flask, victim: dict, method: str, path: str, data: dict | None
) -> None:
    with app.app_context():
        account("mallory")
    mallory = logged_in(app, "mallory")
    before = snapshot(app)
    response, _ = _request(mallory, method, path, data, victim)
    assert response.status_code == 403
    assert snapshot(app) == before
    assert whoami(victim["client"]) == "alice"
    assert bearer(app.test_client(), victim["full_key"]).json == {"user": "alice"}


def test_an_admin_who_logs_in_from_the_redirect_lands_on_the_page_asked_for(
    app: Flask, boss: int
) -> None:
    client = app.test_client()
    response = client.get("/admin/accounts/?q=bo&active=yes")
    next_url = parse_qs(urlsplit(response.headers["Location"]).query)["next"][0]
    assert next_url == "/admin/accounts/?q=bo&active=yes"
    response = log_in(client, "boss", next=next_url)
    assert response.status_code == 302 and response.headers["Location"] == next_url
    assert listed_usernames(client.get(next_url).get_data(as_text=True)) == ["boss"]


def test_the_admin_link_is_shown_to_admins_only(app: Flask, admin: FlaskClient, alice: int) -> None:
    assert 'href="/admin/"' in admin.get("/").get_data(as_text=True)
    assert 'href="/admin/"' not in logged_in(app, "alice").get("/").get_data(as_text=True)


# -- dashboard ----------------------------------------------------------------------------


def dashboard_counts(client: FlaskClient) -> dict[str, int]:
    page = client.get("/admin/").get_data(as_text=True)
    pairs = re.findall(
        r'<span class="stat-value">(\d+)</span><span class="stat-label">([^<]+)</span>', page
    )
    return {label: int(value) for value, label in pairs}


def test_the_dashboard_counts_users_logins_and_sessions(app: Flask, admin: FlaskClient) -> None:
    with app.app_context():
        for name in ("alice", "bob"):
            account(name)
        account("carol", is_active=False)
        account("erin", is_admin=True)
        # Yesterday's logins are not today's.
        yesterday = utcnow() - timedelta(days=1, hours=1)
        for succeeded in (True, False):
            db.execute(
                "INSERT INTO login_attempts (username_key, user_id, ip, succeeded, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                ("alice", None, "192.0.2.1", succeeded, yesterday),
            )
    logged_in(app, "alice")
    logged_in(app, "alice")  # a second device
    bob = logged_in(app, "bob")
    assert post(bob, "/accounts/logout").status_code == 302
    stranger = app.test_client()
    assert log_in(stranger, "alice", "wrong password 1").status_code == 401
    assert log_in(stranger, "alice", "wrong password 2").status_code == 401
    assert log_in(stranger, "ghost", "no such user").status_code == 401

    assert dashboard_counts(admin) == {
        "users": 5,  # boss, alice, bob, carol, erin
        "active users": 4,  # all but carol
        "admins": 2,  # boss and erin
        "active sessions": 3,  # boss, and alice twice; bob logged out
        "logins today (UTC)": 4,  # boss, alice twice, bob
        "failed logins today": 3,
    }


def test_the_dashboard_links_to_the_filtered_lists(app: Flask, admin: FlaskClient) -> None:
    page = admin.get("/admin/").get_data(as_text=True)
    assert 'href="/admin/accounts/?active=yes"' in page
    assert 'href="/admin/accounts/?admin=yes"' in page
    assert 'href="/admin/audit/"' in page


# -- user list ------------------------------------------------------------------------------


@pytest.fixture
def people(app: Flask, boss: int) -> dict[str, int]:
    """A few users with distinct names, emails and flags (created in this order)."""
    with app.app_context():
        return {
            "boss": boss,
            "alice": account("alice"),
            "Alfred": account("Alfred", email="fred@example.org"),
            "zoe": account("zoe", email="Alison.Z@Example.net"),
            "bob": account("bob"),
            "carol": account("carol", is_active=False),
            "erin": account("erin", is_admin=True),
        }


def names(client: FlaskClient, query: str) -> list[str]:
    response = client.get(f"/admin/accounts/?{query}")
    assert response.status_code == 200
    return listed_usernames(response.get_data(as_text=True))


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("al", {"alice", "Alfred", "zoe"}),  # zoe by her email alison.z@...
        ("AL", {"alice", "Alfred", "zoe"}),
        ("ALIS", {"zoe"}),
        ("fred@", {"Alfred"}),
        ("Alice@EXAMPLE.com", {"alice"}),
        ("  bob  ", {"bob"}),
        ("example", set()),  # a prefix search, not "contains"
        ("nobody", set()),
    ],
)
def test_the_user_list_searches_username_and_email_prefixes_ignoring_case(
    admin: FlaskClient, people: dict, search: str, expected: set[str]
) -> None:
    assert set(names(admin, f"q={search}")) == expected


def test_a_search_that_matches_nothing_says_so(admin: FlaskClient, people: dict) -> None:
    page = admin.get("/admin/accounts/?q=nobody").get_data(as_text=True)
    assert "No users match." in page and "0 users" in page


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ("active=no", {"carol"}),
        ("active=yes", {"boss", "alice", "Alfred", "zoe", "bob", "erin"}),
        ("admin=yes", {"boss", "erin"}),
        ("admin=no", {"alice", "Alfred", "zoe", "bob", "carol"}),
        ("active=yes&admin=no&q=a", {"alice", "Alfred", "zoe"}),
        ("active=&admin=", {"boss", "alice", "Alfred", "zoe", "bob", "carol", "erin"}),
    ],
)
def test_the_user_list_filters_by_active_and_admin(
    admin: FlaskClient, people: dict, filters: str, expected: set[str]
) -> None:
    assert set(names(admin, filters)) == expected


def test_the_user_list_sorts_by_username_both_ways_and_newest_first_by_default(
    admin: FlaskClient, people: dict
) -> None:
    alphabetical = sorted(people, key=str.casefold)
    assert names(admin, "sort=username&dir=asc") == alphabetical
    assert names(admin, "sort=username&dir=desc") == alphabetical[::-1]
    assert names(admin, "") == list(people)[::-1]  # newest first
    page = admin.get("/admin/accounts/?sort=username&dir=asc&q=a").get_data(as_text=True)
    # The column header offers the other direction and keeps the search.
    link = re.search(r'<a href="([^"]+)" aria-sort="ascending">Username', page)
    assert link, "the sorted column is marked"
    query = parse_qs(urlsplit(html.unescape(link.group(1))).query)
    assert query["dir"] == ["desc"] and query["q"] == ["a"] and query["sort"] == ["username"]


def pager_links(page: str) -> dict[str, dict[str, list[str]]]:
    """The pager's prev/next links, each as its parsed query."""
    return {
        rel: parse_qs(urlsplit(html.unescape(href)).query)
        for href, rel in re.findall(r'<a href="([^"]+)" rel="(prev|next)">', page)
    }


def pager_href(page: str, text: str) -> str:
    """The link whose text is *text*, as the page writes it ("&lsaquo; Previous")."""
    found = re.search(r'<a href="([^"]+)"[^>]*>' + re.escape(text) + "</a>", page)
    assert found, f"no {text} link"
    return html.unescape(found.group(1))


def members(numbers: range) -> list[str]:
    return [f"member{n:03d}" for n in numbers]


def add_members(count: int) -> list[int]:
    """Users member000, member001... joined in that order; their ids. In an app context."""
    return [
        models.create_user(name, f"{name}@example.com", PASSWORD_HASH).id
        for name in members(range(count))
    ]


def test_the_user_list_pages_through_120_users_50_at_a_time(app: Flask, admin: FlaskClient) -> None:
    """Pages are found by seeking from the row a link names: next, previous, first and last."""
    with app.app_context():
        add_members(120)
    base = "/admin/accounts/?q=member&sort=username&dir=asc"

    first = admin.get(base).get_data(as_text=True)
    assert listed_usernames(first) == members(range(50))
    assert "120 users" in first
    links = pager_links(first)
    assert list(links) == ["next"]  # nothing before the first page
    after = links["next"].pop("after")
    assert links["next"] == {"q": ["member"], "sort": ["username"], "dir": ["asc"]}
    assert after[0].startswith("member049~")  # the last row shown: its sort value and id

    second = admin.get(pager_href(first, "Next &rsaquo;")).get_data(as_text=True)
    assert listed_usernames(second) == members(range(50, 100))
    assert set(pager_links(second)) == {"prev", "next"}

    third = admin.get(pager_href(second, "Next &rsaquo;")).get_data(as_text=True)
    assert listed_usernames(third) == members(range(100, 120))
    assert list(pager_links(third)) == ["prev"]  # the end: no next, no last
    back = admin.get(pager_href(third, "&lsaquo; Previous")).get_data(as_text=True)
    assert listed_usernames(back) == members(range(50, 100))

    last = admin.get(pager_href(first, "Last &raquo;")).get_data(as_text=True)
    assert listed_usernames(last) == members(range(70, 120))  # the last 50
    assert list(pager_links(last)) == ["prev"]
    before_last = admin.get(pager_href(last, "&lsaquo; Previous")).get_data(as_text=True)
    assert listed_usernames(before_last) == members(range(20, 70))
    # Only 20 rows lie before that page: "previous" shows the whole first page instead.
    again = admin.get(pager_href(before_last, "&lsaquo; Previous")).get_data(as_text=True)
    assert listed_usernames(again) == members(range(50))
    assert list(pager_links(again)) == ["next"]
    first_again = admin.get(pager_href(last, "&laquo; First")).get_data(as_text=True)
    assert listed_usernames(first_again) == members(range(50))

    for bad in ("after=", "after=nonsense", "after=x~-1", "before=~", "after=" + "9" * 900):
        page = admin.get(f"{base}&{bad}").get_data(as_text=True)
        assert listed_usernames(page) == listed_usernames(first), bad


def test_paging_by_join_date_says_newer_and_older_and_jumps_to_a_date(
    app: Flask, admin: FlaskClient
) -> None:
    """Users who joined in the same second stay in order (the id breaks the tie), none lost."""
    with app.app_context():
        for n, user_id in enumerate(add_members(110)):
            day = 1 + n // 10  # ten users a day, every one of them at noon
            db.execute(
                "UPDATE users SET created_at = %s WHERE id = %s",
                (datetime(2026, 1, day, 12, 0, 0), user_id),
            )
    base = "/admin/accounts/?q=member"
    seen: list[str] = []
    page = admin.get(base).get_data(as_text=True)
    while True:
        seen += listed_usernames(page)
        if 'rel="next"' not in page:
            break
        assert "Older &rsaquo;" in page and "Oldest &raquo;" in page
        page = admin.get(pager_href(page, "Older &rsaquo;")).get_data(as_text=True)
    assert seen == members(range(109, -1, -1))  # newest first, each exactly once
    assert "&laquo; Newest" in page and "&lsaquo; Newer" in page

    jumped = admin.get(f"{base}&joined=2026-01-03").get_data(as_text=True)
    assert listed_usernames(jumped) == members(range(29, -1, -1))  # joined on the 3rd or before
    assert 'rel="prev"' in jumped and 'rel="next"' not in jumped
    oldest_first = admin.get(f"{base}&dir=asc&joined=2026-01-03").get_data(as_text=True)
    assert listed_usernames(oldest_first) == members(range(20, 70))  # on the 3rd or after

    wrong = admin.get(f"{base}&joined=yesterday").get_data(as_text=True)
    assert "Enter a date as YYYY-MM-DD." in wrong
    assert listed_usernames(wrong) == members(range(109, 59, -1))


def test_users_who_never_logged_in_page_in_their_place_by_last_login(
    app: Flask, admin: FlaskClient
) -> None:
    """NULL last logins sort first going up and last going down, and paging keeps them."""
    with app.app_context():
        for n, user_id in enumerate(add_members(60)):
            if n % 2:  # odd members logged in, at times that grow with n
                db.execute(
                    "UPDATE users SET last_login_at = %s WHERE id = %s",
                    (datetime(2026, 2, 1) + timedelta(minutes=n), user_id),
                )
    never = members(range(0, 60, 2))
    logged_in = members(range(1, 60, 2))
    for direction, expected in (
        ("asc", never + logged_in),
        ("desc", logged_in[::-1] + never[::-1]),
    ):
        base = f"/admin/accounts/?q=member&sort=last_login&dir={direction}"
        first = admin.get(base).get_data(as_text=True)
        second = admin.get(pager_href(first, "Next &rsaquo;")).get_data(as_text=True)
        assert listed_usernames(first) + listed_usernames(second) == expected, direction
        back = admin.get(pager_href(second, "&lsaquo; Previous")).get_data(as_text=True)
        assert listed_usernames(back) == expected[:50], direction


def dated_members(count: int) -> None:
    """``count`` members, ten joining each day at noon from 2026-01-01; every other one
    deactivated, every third an admin. Call inside an app context."""
    for n, user_id in enumerate(add_members(count)):
        db.execute(
            "UPDATE users SET created_at = %s, is_active = %s, is_admin = %s WHERE id = %s",
            (datetime(2026, 1, 1 + n // 10, 12, 0, 0), n % 2 == 0, n % 3 == 0, user_id),
        )


@pytest.mark.parametrize("filters", ["active=no", "active=yes", "admin=yes", "active=yes&admin=no"])
def test_filtered_lists_page_in_join_order_and_jump_to_a_date(
    app: Flask, admin: FlaskClient, filters: str
) -> None:
    """Filtered, unsearched lists in join order (MariaDB reads them through the filter's
    own index, named in the statement): every match once, in order, from any date."""
    with app.app_context():
        dated_members(130)
        rows = db.fetch_all("SELECT username, is_active, is_admin, created_at, id FROM users")
    wanted = dict(parse_qs(filters))
    flags = {"yes": True, "no": False}

    def matches(row: dict[str, Any]) -> bool:
        return all(
            bool(row[f"is_{name}"]) == flags[wanted[name][0]]
            for name in ("active", "admin")
            if name in wanted
        )

    newest_first = [
        r["username"]
        for r in sorted(filter(matches, rows), key=lambda r: (r["created_at"], r["id"]))
    ][::-1]
    base = f"/admin/accounts/?{filters}"
    seen: list[str] = []
    page = admin.get(base).get_data(as_text=True)
    pages = [page]
    while 'rel="next"' in page:
        seen += listed_usernames(page)
        page = admin.get(pager_href(page, "Older &rsaquo;")).get_data(as_text=True)
        pages.append(page)
    seen += listed_usernames(page)
    assert seen == newest_first
    if len(pages) > 1:
        back = admin.get(pager_href(pages[1], "&lsaquo; Newer")).get_data(as_text=True)
        assert listed_usernames(back) == newest_first[:50]

    by_the_5th = [r for r in filter(matches, rows) if r["created_at"] < datetime(2026, 1, 6)]
    jumped = admin.get(f"{base}&joined=2026-01-05").get_data(as_text=True)
    expected = sorted(by_the_5th, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    assert listed_usernames(jumped) == [r["username"] for r in expected][:50]
    assert 'rel="prev"' in jumped
    older = admin.get(f"{base}&dir=asc&joined=2026-01-05").get_data(as_text=True)
    from_the_5th = [
        r["username"]
        for r in sorted(filter(matches, rows), key=lambda r: (r["created_at"], r["id"]))
        if r["created_at"] >= datetime(2026, 1, 5)
    ]
    assert listed_usernames(older) == from_the_5th[:50]


def test_the_list_statements_are_the_ones_that_stay_fast_at_a_million_users(
    app: Flask, admin: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``python -m bench admin_list`` found at 1,000,000 users (bench/README.md)."""
    with app.app_context():
        dated_members(60)
    statements: list[str] = []
    for name in ("fetch_all", "fetch_value"):
        method = getattr(db, name)
        monkeypatch.setattr(
            db, name, lambda sql, *a, m=method, **k: statements.append(sql) or m(sql, *a, **k)
        )
    mariadb = app.config["DATABASE"].engine == "mysql"

    def select(query: str) -> list[str]:
        statements.clear()
        assert admin.get(f"/admin/accounts/?{query}").status_code == 200
        return [s for s in statements if s.startswith("SELECT") and "FROM users" in s]

    # A unique column alone orders the rows: MariaDB reads "ORDER BY username_key"
    # from its unique index, "ORDER BY username_key, id" by sorting every row.
    assert any(s.endswith("ORDER BY username_key DESC LIMIT %s") for s in select("sort=username"))
    # A filter in join order names its (flag, created_at) index on MariaDB.
    for query, index in (
        ("active=no", "users_active_created"),
        ("admin=yes", "users_admin_created"),
        ("active=yes&admin=no", "users_active_created"),
    ):
        reads = [s for s in select(f"{query}&joined=2026-01-03") if "LIMIT" in s]
        assert len(reads) >= 2  # the page, and "any row past it?"
        assert all((f"FORCE INDEX ({index})" in s) == mariadb for s in reads), query
    # "Is there a row past this one?" asks without ORDER BY, so the cheapest index answers.
    checks = [s for s in select("q=member&joined=2026-01-03") if s.startswith("SELECT 1 ")]
    assert checks and not any("ORDER BY" in s for s in checks)


def test_large_counts_are_shown_as_an_estimate_and_small_ones_exactly(
    app: Flask, admin: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On MariaDB a count past the limit comes from the optimizer's estimate, not a scan."""
    with app.app_context():
        add_members(120)
    monkeypatch.setattr(listing, "EXACT_COUNT_BELOW", 100)
    page = admin.get("/admin/accounts/?q=member").get_data(as_text=True)
    if app.config["DATABASE"].engine == "sqlite":
        assert "120 users" in page  # SQLite always counts
    else:
        assert re.search(r"about [\d,]+ users", page), "an estimate, said to be one"
    assert len(listed_usernames(page)) == 50
    assert "1 user<" in admin.get("/admin/accounts/?q=member007").get_data(as_text=True)


@pytest.mark.parametrize(
    ("value", "exact", "shown"),
    [
        (0, True, "0"),
        (1234, True, "1,234"),
        (998_123, False, "about 1,000,000"),
        (1_049_000, False, "about 1,000,000"),
        (96_543, False, "about 97,000"),
        (12_345, False, "about 12,000"),
    ],
)
def test_counts_read_as_people_say_them(value: int, exact: bool, shown: str) -> None:
    assert str(listing.Count(value, exact)) == shown


TRICKY_NAMES = ["a_c", "abc", "50%off", "50xoff", "p!q", "p!!q", "back\\slash", "backx", "o'brien"]


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("a_", {"a_c"}),  # _ is not "any character"
        ("a_c", {"a_c"}),
        ("50%", {"50%off"}),  # % is not "anything"
        ("%", set()),
        ("_", set()),
        ("p!", {"p!q", "p!!q"}),  # the LIKE escape character is literal too
        ("p!!", {"p!!q"}),
        ("back\\", {"back\\slash"}),
        ("o'b", {"o'brien"}),
    ],
)
def test_like_wildcards_in_the_search_are_literal(
    app: Flask, admin: FlaskClient, search: str, expected: set[str]
) -> None:
    with app.app_context():
        for n, name in enumerate(TRICKY_NAMES):
            models.create_user(name, f"user{n}@example.com", PASSWORD_HASH)
    response = admin.get("/admin/accounts/", query_string={"q": search})
    assert response.status_code == 200
    assert set(listed_usernames(response.get_data(as_text=True))) == expected


@pytest.mark.parametrize(
    "args",
    [
        {"q": "' OR '1'='1"},
        {"q": "'; DROP TABLE users; --"},
        {"q": '" OR ""="'},
        {"q": "\\' OR 1=1 -- "},
        {"q": "%' OR 1=1 #"},
        {"q": "x" * 5000},
        {"sort": "id; DROP TABLE users", "dir": "asc; DROP TABLE users"},
        {"sort": "(SELECT password_hash FROM users)"},
        {"active": "yes' OR 1=1 --", "admin": "1"},
    ],
)
def test_sql_in_the_list_parameters_is_only_data(
    app: Flask, admin: FlaskClient, people: dict, args: dict[str, str]
) -> None:
    before = snapshot(app)
    response = admin.get("/admin/accounts/", query_string=args)
    assert response.status_code == 200
    shown = listed_usernames(response.get_data(as_text=True))
    if "q" in args:
        assert shown == []
    else:
        assert set(shown) == set(people)
    assert snapshot(app) == before


def test_html_in_a_username_is_escaped_in_the_list_and_on_the_user_page(
    app: Flask, admin: FlaskClient
) -> None:
    evil = '<img src=x onerror="alert(1)">'
    with app.app_context():
        user_id = models.create_user(evil, "evil@example.com", PASSWORD_HASH).id
    for path in ("/admin/accounts/", f"/admin/accounts/{user_id}"):
        page = admin.get(path).get_data(as_text=True)
        assert "<img" not in page
        assert html.escape(evil) in page or "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    assert evil in listed_usernames(admin.get("/admin/accounts/").get_data(as_text=True))


# -- one user's page -------------------------------------------------------------------------


def edit(admin: FlaskClient, user_id: int, email: str, *, active: bool, is_admin: bool) -> Any:
    """Submit the user page's form; unticked boxes are simply not sent, as in a browser."""
    data = {"email": email}
    if active:
        data["is_active"] = "y"
    if is_admin:
        data["is_admin"] = "y"
    return post(admin, f"/admin/accounts/{user_id}", data)


def field_errors(page: str, name: str) -> list[str]:
    block = re.search(rf'<ul class="errors" id="{name}-errors">(.*?)</ul>', page, re.S)
    if block is None:
        return []
    return [html.unescape(e) for e in re.findall(r"<li>(.*?)</li>", block.group(1))]


def test_the_user_page_shows_the_account(app: Flask, admin: FlaskClient, alice: int) -> None:
    with app.app_context():
        apikeys.create_key(alice, "laptop CLI")
    logged_in(app, "alice")
    page = admin.get(f"/admin/accounts/{alice}").get_data(as_text=True)
    assert "<h1>alice</h1>" in page
    assert 'value="alice@example.com"' in page
    assert "laptop CLI" in page
    assert "End all sessions (1)" in page


def test_an_admin_changes_a_users_email(app: Flask, admin: FlaskClient, alice: int) -> None:
    response = edit(admin, alice, "Alice.New@Example.com", active=True, is_admin=False)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/admin/accounts/{alice}"
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert ("success", "alice has been updated.") in flashes(page)
    assert user(app, alice).email == "alice.new@example.com"  # type: ignore[union-attr]
    assert log_in(app.test_client(), "alice.new@example.com").status_code == 302


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("bob@example.com", "An account with this email already exists."),
        ("BOB@Example.com", "An account with this email already exists."),
        ("not-an-email", "Enter a valid email address."),
        ("", "This field is required."),
    ],
)
def test_a_bad_email_is_refused_beside_the_field(
    app: Flask, admin: FlaskClient, email: str, message: str
) -> None:
    with app.app_context():
        alice = account("alice")
        account("bob")
    before = snapshot(app)
    response = edit(admin, alice, email, active=True, is_admin=False)
    assert response.status_code == 400
    assert field_errors(response.get_data(as_text=True), "email") == [message]
    assert snapshot(app) == before


def test_deactivating_a_user_logs_them_out_at_once_and_reactivating_lets_them_back(
    app: Flask, admin: FlaskClient, alice: int
) -> None:
    with app.app_context():
        _, key = apikeys.create_key(alice, "script")
    browser = logged_in(app, "alice")
    assert whoami(browser) == "alice"

    assert edit(admin, alice, "alice@example.com", active=False, is_admin=False).status_code == 302
    assert user(app, alice).is_active is False  # type: ignore[union-attr]
    assert whoami(browser) is None
    assert browser.get("/accounts/profile").status_code == 302
    assert bearer(app.test_client(), key).status_code == 401
    refused = log_in(app.test_client(), "alice")
    assert refused.status_code == 401
    assert "This account has been deactivated" in refused.get_data(as_text=True)

    assert edit(admin, alice, "alice@example.com", active=True, is_admin=False).status_code == 302
    assert user(app, alice).is_active is True  # type: ignore[union-attr]
    assert whoami(browser) is None  # the ended session stays ended
    assert whoami(logged_in(app, "alice")) == "alice"
    assert bearer(app.test_client(), key).json == {"user": "alice"}


def test_granting_and_revoking_admin_takes_effect_on_the_next_request(
    app: Flask, admin: FlaskClient, alice: int
) -> None:
    browser = logged_in(app, "alice")
    assert browser.get("/admin/").status_code == 403
    assert edit(admin, alice, "alice@example.com", active=True, is_admin=True).status_code == 302
    assert user(app, alice).is_admin is True  # type: ignore[union-attr]
    assert browser.get("/admin/").status_code == 200
    assert edit(admin, alice, "alice@example.com", active=True, is_admin=False).status_code == 302
    assert user(app, alice).is_admin is False  # type: ignore[union-attr]
    assert browser.get("/admin/").status_code == 403


@pytest.mark.parametrize(
    ("active", "is_admin"), [(True, False), (False, True), (False, False)], ids=str
)
def test_the_last_active_admin_cannot_demote_or_deactivate_themselves(
    app: Flask, admin: FlaskClient, boss: int, active: bool, is_admin: bool
) -> None:
    with app.app_context():
        account("erin", is_admin=True, is_active=False)  # a deactivated admin does not count
    before = snapshot(app)
    response = edit(admin, boss, "boss@example.com", active=active, is_admin=is_admin)
    assert response.status_code == 400
    assert LAST_ADMIN in " ".join(field_errors(response.get_data(as_text=True), "is_admin"))
    assert snapshot(app) == before
    assert admin.get("/admin/").status_code == 200  # still logged in, still admin


def test_a_refused_change_of_the_last_admin_saves_nothing_else_either(
    app: Flask, admin: FlaskClient, boss: int
) -> None:
    response = edit(admin, boss, "new-boss@example.com", active=True, is_admin=False)
    assert response.status_code == 400
    assert LAST_ADMIN in response.get_data(as_text=True)
    after = user(app, boss)
    assert after is not None and after.is_admin and after.is_active
    # The page says the change was refused, so none of it may have been saved.
    assert after.email == "boss@example.com"


def test_an_admin_may_step_down_when_another_active_admin_remains(
    app: Flask, admin: FlaskClient, boss: int
) -> None:
    with app.app_context():
        account("erin", is_admin=True)
    assert edit(admin, boss, "boss@example.com", active=True, is_admin=False).status_code == 302
    assert user(app, boss).is_admin is False  # type: ignore[union-attr]
    assert admin.get("/admin/").status_code == 403


def test_an_admin_may_deactivate_themselves_when_another_active_admin_remains(
    app: Flask, admin: FlaskClient, boss: int
) -> None:
    with app.app_context():
        account("erin", is_admin=True)
    assert edit(admin, boss, "boss@example.com", active=False, is_admin=True).status_code == 302
    assert user(app, boss).is_active is False  # type: ignore[union-attr]
    assert whoami(admin) is None
    assert whoami(logged_in(app, "erin")) == "erin"


def test_send_reset_link_emails_a_working_link(make_app: Any, smtp_outbox: Any) -> None:
    app = make_app(**smtp_outbox.settings)
    admin, alice = boss_and_alice(app)
    page = follow(admin, post(admin, f"/admin/accounts/{alice}/reset-link"))
    assert ("success", "A password-reset link has been sent to alice@example.com.") in flashes(page)

    assert len(smtp_outbox.messages) == 1
    message = smtp_outbox.messages[0]
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Reset your password"
    link = re.search(
        r"http://127\.0\.0\.1:5000(/accounts/password/reset/\S+)", message.get_content()
    )
    assert link, message.get_content()
    stranger = app.test_client()
    assert stranger.get(link.group(1)).status_code == 200
    token = csrf_token(stranger)
    new = "Brand-New-Secret-77"
    form = {"csrf_token": token, "password": new, "confirm": new}
    reset = stranger.post(link.group(1), data=form)
    assert reset.status_code == 302
    assert log_in(app.test_client(), "alice", new).status_code == 302


def test_no_reset_link_is_sent_to_a_deactivated_user(make_app: Any, smtp_outbox: Any) -> None:
    app = make_app(**smtp_outbox.settings)
    admin, alice = boss_and_alice(app, is_active=False)
    response = post(admin, f"/admin/accounts/{alice}/reset-link")
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert (
        "error",
        "alice is deactivated: activate the account before sending a link.",
    ) in flashes(page)
    assert smtp_outbox.messages == []


def test_a_reset_link_that_cannot_be_sent_is_reported(make_app: Any) -> None:
    app = make_app(MAIL_BACKEND="smtp", MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port())
    admin, alice = boss_and_alice(app)
    page = follow(admin, post(admin, f"/admin/accounts/{alice}/reset-link"))
    assert ("error", "The email could not be sent; check the mail settings.") in flashes(page)
    with app.app_context():
        assert audit_log.count(action="admin.reset_link").value == 0


def test_end_all_sessions_logs_the_user_out_everywhere(app: Flask, admin: FlaskClient) -> None:
    with app.app_context():
        alice = account("alice")
        account("bob")
    phone, laptop = logged_in(app, "alice"), logged_in(app, "alice")
    bob = logged_in(app, "bob")
    response = post(admin, f"/admin/accounts/{alice}/end-sessions")
    assert response.status_code == 302
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert ("success", "Ended 2 sessions of alice.") in flashes(page)
    assert "End all sessions (0)" in page
    assert whoami(phone) is None and whoami(laptop) is None
    assert whoami(bob) == "bob" and whoami(admin) == "boss"


def test_revoking_a_users_api_key_makes_it_useless(app: Flask, admin: FlaskClient) -> None:
    with app.app_context():
        alice = account("alice")
        bob = account("bob")
        key, full = apikeys.create_key(alice, "laptop")
        _, kept = apikeys.create_key(alice, "desktop")
    api = app.test_client()
    assert bearer(api, full).json == {"user": "alice"}

    # A key can only be revoked from its owner's page.
    assert post(admin, f"/admin/accounts/{bob}/keys/{key.id}/revoke").status_code == 404
    assert bearer(api, full).json == {"user": "alice"}

    response = post(admin, f"/admin/accounts/{alice}/keys/{key.id}/revoke")
    assert response.status_code == 302
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert ("success", "The API key has been revoked.") in flashes(page)
    assert bearer(api, full).status_code == 401
    assert bearer(api, kept).json == {"user": "alice"}
    assert post(admin, f"/admin/accounts/{alice}/keys/{key.id}/revoke").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/accounts/987654"),
        ("POST", "/admin/accounts/987654"),
        ("POST", "/admin/accounts/987654/reset-link"),
        ("POST", "/admin/accounts/987654/end-sessions"),
        ("POST", "/admin/accounts/987654/keys/1/revoke"),
        ("GET", "/admin/accounts/not-a-number"),
    ],
)
def test_an_unknown_user_is_404(app: Flask, admin: FlaskClient, method: str, path: str) -> None:
    before = snapshot(app)
    if method == "GET":
        response = admin.get(path)
    else:
        response = post(admin, path, {"email": "x@example.com", "is_active": "y"})
    assert response.status_code == 404
    assert snapshot(app) == before


# -- bulk actions -----------------------------------------------------------------------------


def bulk(admin: FlaskClient, action: str, ids: list[Any], *, confirmed: bool = False) -> Any:
    data: dict[str, Any] = {"action": action, "user_ids": [str(i) for i in ids]}
    if confirmed:
        data["confirmed"] = "yes"
    return post(admin, "/admin/accounts/bulk", data)


def follow(client: FlaskClient, response: Any) -> str:
    assert response.status_code == 302, response.get_data(as_text=True)
    page: str = client.get(response.headers["Location"]).get_data(as_text=True)
    return page


def hidden_fields(page: str) -> list[tuple[str, str]]:
    """The hidden inputs of the confirmation form, in page order."""
    form = re.search(r'<form method="post" action="/admin/accounts/bulk">(.*?)</form>', page, re.S)
    assert form, "the page has no bulk form"
    fields = []
    for tag in re.findall(r"<input [^>]*>", form.group(1)):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', tag))
        if attrs.get("type") == "hidden":
            fields.append((attrs["name"], html.unescape(attrs["value"])))
    return fields


def test_a_bulk_action_first_asks_for_confirmation_and_changes_nothing(
    app: Flask, admin: FlaskClient
) -> None:
    with app.app_context():
        alice, bob = account("alice"), account("bob")
    before = snapshot(app)
    response = bulk(admin, "deactivate", [alice, bob])
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "<h1>Deactivate 2 users?</h1>" in page
    assert "alice &lt;alice@example.com&gt;" in page and "bob &lt;bob@example.com&gt;" in page
    fields = hidden_fields(page)
    assert ("action", "deactivate") in fields and ("confirmed", "yes") in fields
    assert {v for n, v in fields if n == "user_ids"} == {str(alice), str(bob)}
    assert snapshot(app) == before


def test_confirming_a_bulk_deactivation_applies_it_and_ends_their_sessions(
    app: Flask, admin: FlaskClient
) -> None:
    with app.app_context():
        alice, bob, carol = account("alice"), account("bob"), account("carol")
    alice_browser, carol_browser = logged_in(app, "alice"), logged_in(app, "carol")
    confirm = bulk(admin, "deactivate", [alice, bob]).get_data(as_text=True)
    # Submit the confirmation form exactly as the page has it.
    response = admin.post("/admin/accounts/bulk", data=_multi(hidden_fields(confirm)))
    page = follow(admin, response)
    assert ("success", "Deactivate: 2 users done.") in flashes(page)
    assert [user(app, i).is_active for i in (alice, bob, carol)] == [False, False, True]  # type: ignore[union-attr]
    assert whoami(alice_browser) is None
    assert whoami(carol_browser) == "carol"

    page = follow(admin, bulk(admin, "activate", [alice, bob], confirmed=True))
    assert ("success", "Activate: 2 users done.") in flashes(page)
    assert [user(app, i).is_active for i in (alice, bob)] == [True, True]  # type: ignore[union-attr]


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    data: dict[str, list[str]] = {}
    for name, value in pairs:
        data.setdefault(name, []).append(value)
    return data


def test_a_bulk_delete_removes_the_users_their_keys_and_their_sessions(
    app: Flask, admin: FlaskClient
) -> None:
    with app.app_context():
        alice, bob = account("alice"), account("bob")
        _, key = apikeys.create_key(alice, "laptop")
        models.create_reset_token(alice, "0" * 64, timedelta(hours=1))
    browser = logged_in(app, "alice")
    confirm = bulk(admin, "delete", [alice]).get_data(as_text=True)
    assert "Deleting removes the accounts and their API keys for good." in confirm
    page = follow(admin, bulk(admin, "delete", [alice], confirmed=True))
    assert ("success", "Delete: 1 user done.") in flashes(page)
    assert user(app, alice) is None and user(app, bob) is not None
    with app.app_context():
        assert db.fetch_value("SELECT COUNT(*) FROM api_keys WHERE user_id = %s", (alice,)) == 0
        tokens = "SELECT COUNT(*) FROM password_reset_tokens WHERE user_id = %s"
        assert db.fetch_value(tokens, (alice,)) == 0
    assert bearer(app.test_client(), key).status_code == 401
    assert whoami(browser) is None
    assert "alice" not in listed_usernames(page)
    # The audit log keeps the deletion, naming the account that is gone by its id.
    rows = audit_rows(admin, "action=admin.bulk_delete")
    assert [(r["by"], r["whom"], r["detail"]) for r in rows] == [("boss", f"#{alice}", "alice")]


@pytest.mark.parametrize("action", ["deactivate", "delete"])
def test_a_bulk_action_refuses_the_admins_own_account(
    app: Flask, admin: FlaskClient, boss: int, alice: int, action: str
) -> None:
    page = follow(admin, bulk(admin, action, [boss, alice], confirmed=True))
    assert (
        "success",
        f"{action.capitalize()}: 1 user done.",
    ) in flashes(page)
    assert ("warning", "Not changed: boss (yourself)") in flashes(page)
    me = user(app, boss)
    assert me is not None and me.is_active and me.is_admin
    assert whoami(admin) == "boss"
    other = user(app, alice)
    assert other is None if action == "delete" else other is not None and not other.is_active


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "deactivate"}, "Select at least one user."),
        ({"action": "deactivate", "user_ids": ["abc"], "confirmed": "yes"}, None),
        ({"action": "delete", "user_ids": ["{alice}", "1 OR 1=1"], "confirmed": "yes"}, None),
        ({"action": "promote", "user_ids": ["{alice}"], "confirmed": "yes"}, None),
        ({"user_ids": ["{alice}"], "confirmed": "yes"}, None),
    ],
    ids=["no users", "non-integer id", "one id not an integer", "unknown action", "no action"],
)
def test_a_malformed_bulk_request_is_an_error_and_changes_nothing(
    app: Flask, admin: FlaskClient, alice: int, data: dict[str, Any], message: str | None
) -> None:
    form = {
        k: [v.format(alice=alice) for v in vs] if isinstance(vs, list) else vs
        for k, vs in data.items()
    }
    before = snapshot(app)
    response = post(admin, "/admin/accounts/bulk", form)
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/accounts/"
    errors = [text for category, text in flashes(follow(admin, response)) if category == "error"]
    assert errors, "the admin is told what went wrong"
    if message:
        assert errors == [message]
    assert snapshot(app) == before


# -- audit log --------------------------------------------------------------------------------


@pytest.fixture
def audited(app: Flask, admin: FlaskClient) -> dict[str, int]:
    """One of each admin action, by boss from ADMIN_IP."""
    with app.app_context():
        alice, bob = account("alice"), account("bob")
        key, _ = apikeys.create_key(alice, "laptop")
    logged_in(app, "alice")
    assert edit(admin, alice, "alice2@example.com", active=True, is_admin=False).status_code == 302
    assert post(admin, f"/admin/accounts/{alice}/reset-link").status_code == 302
    assert post(admin, f"/admin/accounts/{alice}/end-sessions").status_code == 302
    assert post(admin, f"/admin/accounts/{alice}/keys/{key.id}/revoke").status_code == 302
    assert bulk(admin, "deactivate", [bob], confirmed=True).status_code == 302
    return {"alice": alice, "bob": bob, "key": key.id}


def audit_rows(admin: FlaskClient, query: str = "") -> list[dict[str, str]]:
    page = admin.get(f"/admin/audit/?{query}").get_data(as_text=True)
    columns = ("when", "action", "by", "whom", "detail", "ip")
    return [dict(zip(columns, row, strict=True)) for row in table_rows(page) if len(row) == 6]


def test_admin_actions_are_audited_with_actor_target_and_address(
    admin: FlaskClient, audited: dict
) -> None:
    rows = [{k: v for k, v in row.items() if k != "when"} for row in audit_rows(admin)]
    expected = [  # newest first
        ("admin.bulk_deactivate", "bob", "bob"),
        ("admin.apikey_revoke", "alice", str(audited["key"])),
        ("admin.end_sessions", "alice", "1 ended"),
        ("admin.reset_link", "alice", ""),
        ("admin.user_update", "alice", "email alice@example.com -> alice2@example.com"),
    ]
    assert rows[: len(expected)] == [
        {"action": action, "by": "boss", "whom": whom, "detail": detail, "ip": ADMIN_IP}
        for action, whom, detail in expected
    ]


def test_the_audit_log_filters_by_action(admin: FlaskClient, audited: dict) -> None:
    rows = audit_rows(admin, "action=admin.end_sessions")
    assert [(r["action"], r["whom"]) for r in rows] == [("admin.end_sessions", "alice")]
    page = admin.get("/admin/audit/?action=admin.end_sessions").get_data(as_text=True)
    assert "1 entry" in page
    assert '<option value="admin.end_sessions" selected>' in page
    assert audit_rows(admin, "action=no.such.action") == []


def test_the_audit_log_filters_by_user(admin: FlaskClient, audited: dict) -> None:
    bob_rows = audit_rows(admin, f"user={audited['bob']}")
    assert [r["action"] for r in bob_rows] == ["admin.bulk_deactivate"]
    alice_rows = audit_rows(admin, f"user={audited['alice']}")
    assert alice_rows and {r["whom"] for r in alice_rows} == {"alice"}
    both = audit_rows(admin, f"user={audited['alice']}&action=admin.reset_link")
    assert [r["action"] for r in both] == ["admin.reset_link"]
    # The user page links to that user's full history.
    page = admin.get(f"/admin/accounts/{audited['alice']}").get_data(as_text=True)
    assert f'href="/admin/audit/?user={audited["alice"]}"' in page


def test_html_in_audit_details_is_escaped(app: Flask, admin: FlaskClient, alice: int) -> None:
    label = '<script>alert("owned")</script>'
    browser = logged_in(app, "alice")
    assert post(browser, "/accounts/profile/keys", {"label": label}).status_code == 201
    for path in ("/admin/audit/", f"/admin/accounts/{alice}"):
        page = admin.get(path).get_data(as_text=True)
        assert "<script" not in page
        assert "&lt;script&gt;" in page
    details = [r["detail"] for r in audit_rows(admin, "action=apikey.create")]
    assert len(details) == 1 and details[0].endswith(label)
