"""The admin pages at many users in a real browser: headless Chromium, the real sign-in.

Part of ``python -m bench accounts`` when ``--users`` is set and Chromium and
Playwright are installed (``.ci/run`` and ``pip install -e .[test]`` bring them).
The admin signs in through the login form and the second-factor step, then
opens each page of :func:`bench.admin_list.admin_pages`, follows the pager's
"Older" and "Newer" links, submits the search form and opens a user's page.
Each page must answer 200 and show rows; the browser's Navigation Timing gives
the time to the first byte (the server) and to the load event (the page done).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyotp

from bench._harness import log

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Chromium's own calls home are refused on this network; these flags keep it quiet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMING = """() => {
  const [n] = performance.getEntriesByType("navigation");
  return [n.responseStart - n.requestStart, n.loadEventEnd - n.startTime];
}"""


@dataclass(frozen=True)
class BrowserPage:
    label: str
    url: str  # the path and query the browser ended on
    rows: int  # users listed (or 1 for a user's page)
    shown: str  # the count the list shows ("about 1,000,000 users")
    first_byte_ms: float
    loaded_ms: float


def missing() -> str | None:
    """Why the walk cannot run here, or None."""
    if not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (Debian package 'chromium')"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e .[test])"
    return None


@contextmanager
def _page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_context().new_page()
        finally:
            browser.close()


def _submit(page: Any, fields: dict[str, str], button: str = "main button[type=submit]") -> None:
    for selector, value in fields.items():
        page.fill(selector, value)
    with page.expect_navigation():
        page.click(button)


def _record(
    page: Any, label: str, response_status: int | None = 200, *, may_be_empty: bool = False
) -> BrowserPage:
    path = page.url.split("//", 1)[-1].split("/", 1)[-1]
    if response_status != 200:
        raise RuntimeError(f"{label}: /{path} answered {response_status}")
    user_page = page.url.rstrip("/").split("/")[-1].isdigit()  # /admin/accounts/<id>
    rows = 1 if user_page else page.locator("input[name=user_ids]").count()
    if not rows and not may_be_empty:
        raise RuntimeError(f"{label}: /{path} shows no user")
    shown = page.locator("main p.muted").first
    first_byte, loaded = page.evaluate(TIMING)
    return BrowserPage(
        label,
        "/" + path,
        rows,
        "" if user_page or not shown.count() else shown.inner_text(),
        first_byte,
        loaded,
    )


def walk(
    base: str,
    username: str,
    password: str,
    totp_secret: str,
    pages: list[tuple[str, str]],
) -> list[BrowserPage]:
    """Sign in as the admin and open every page; raises if one fails or lists nobody."""
    results: list[BrowserPage] = []
    with _page() as page:
        page.goto(base + "/accounts/login?next=/admin/accounts/")
        _submit(page, {"#login": username, "#password": password})
        # The benchmark's HTTP sign-in spent this step's code: the next step's is accepted.
        _submit(page, {"#code": pyotp.TOTP(totp_secret).at(time.time() + 30)})
        if not page.url.endswith("/admin/accounts/"):
            raise RuntimeError(f"signing in as {username} ended on {page.url}")

        def visit(label: str, go: Callable[[], Any], may_be_empty: bool = False) -> None:
            log(f"browser: {label}")
            response = go()
            status = response.status if response is not None else 200
            results.append(_record(page, label, status, may_be_empty=may_be_empty))

        for label, query in pages:  # a search may match nobody at a small --users
            url = f"{base}/admin/accounts/{query}"
            visit(label, lambda url=url: page.goto(url), "q=" in query)  # type: ignore[misc]
        visit("first page, then Older", lambda: page.goto(f"{base}/admin/accounts/"))
        with page.expect_navigation():
            page.click("nav.pager a[rel=next]")
        results.append(_record(page, "Older (pager link)"))
        with page.expect_navigation():
            page.click("nav.pager a[rel=prev]")
        results.append(_record(page, "Newer (pager link)"))
        _submit(page, {"input[name=q]": "user000"}, "form.filters button[type=submit]")
        results.append(_record(page, "search form `user000`"))
        with page.expect_navigation():
            page.click("tbody a >> nth=0")
        results.append(_record(page, "a user's page (from the list)"))
    return results


def format_browser(results: list[BrowserPage] | str) -> list[str]:
    if isinstance(results, str):
        return ["", f"Admin pages in a browser: not run: {results}."]
    lines = [
        "",
        "The same pages in headless Chromium, signed in through the login form and the "
        "code step (Navigation Timing; first byte = request sent to response begun):",
        "",
        "| page | ended on | rows | shown | first byte, ms | loaded, ms |",
        "| --- | --- | ---: | --- | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.label} | `{r.url}` | {r.rows} | {r.shown} | {r.first_byte_ms:.1f} "
            f"| {r.loaded_ms:.1f} |"
        )
    return lines
