"""The session list names devices in words ("Chrome 156 on Linux"), the raw User-Agent on hover."""

from __future__ import annotations

import re
from html import unescape

import pytest
from flask import Flask

from apps.accounts.devices import describe
from tests.conftest import create_account, log_in

CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/156.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize(
    ("user_agent", "name"),
    [
        (CHROME_LINUX, "Chrome 156 on Linux"),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0",
            "Firefox 140 on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
            " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
            "Mobile Safari 17 on iOS",
        ),
        ("python-requests/2.32.3", "Python Requests 2"),
        ("curl/8.5.0", "curl 8"),
        ("something nobody has heard of", "something nobody has heard of"),
        ("unknown device", "unknown device"),
        ("", "unknown device"),
    ],
)
def test_a_user_agent_is_named_in_words(user_agent: str, name: str) -> None:
    assert describe(user_agent) == name


def test_the_profile_names_the_device_and_keeps_the_raw_string_on_hover(app: Flask) -> None:
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    raw = CHROME_LINUX + ' "<b>'  # whatever a client sends is shown as text
    client.environ_base["HTTP_USER_AGENT"] = raw
    assert log_in(client, "alice").status_code == 302
    page = client.get("/accounts/profile").get_data(as_text=True)
    cell = re.search(r'<span class="device" title="([^"]*)">([^<]*)</span>', page)
    assert cell, page
    assert unescape(cell.group(1)) == raw
    assert cell.group(2) == "Chrome 156 on Linux"
    assert "<b>" not in page
