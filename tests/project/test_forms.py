"""Form rendering: blank fields' markup is kept and reused, and nothing of a visitor's leaks.

``project.forms.Form`` keeps the markup of fields that show nothing of the
request or session (no value, no errors) and reuses it: the attacks are a kept
field carrying one visitor's CSRF token or typed login to the next visitor.
"""

from __future__ import annotations

import re

from flask import Flask

from apps.accounts.forms import LoginForm, ProfileForm
from tests.conftest import CSRF_META, PASSWORD, create_account

HIDDEN_TOKEN = re.compile(
    r'<input id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)">'
)


def test_each_visitor_gets_their_own_token_in_the_form(app: Flask) -> None:
    pages = [app.test_client().get("/accounts/login").get_data(as_text=True) for _ in range(2)]
    tokens = [HIDDEN_TOKEN.search(page) for page in pages]
    assert all(tokens), "the login form carries a CSRF token"
    first, second = (t.group(1) for t in tokens if t)
    assert first != second  # the token's field is never kept between requests
    for page, token in zip(pages, (first, second), strict=True):
        meta = CSRF_META.search(page)
        assert meta and meta.group(1) == token  # the form's token is the page's own


def test_a_failed_login_shows_what_was_typed_and_the_next_visitor_sees_a_blank_form(
    app: Flask,
) -> None:
    with app.app_context():
        create_account("alice")
    client = app.test_client()
    page = client.get("/accounts/login").get_data(as_text=True)
    token = HIDDEN_TOKEN.search(page)
    assert token
    failed = client.post(
        "/accounts/login",
        data={"csrf_token": token.group(1), "login": "alice-typed", "password": "wrong" + PASSWORD},
    )
    assert failed.status_code == 401
    shown = failed.get_data(as_text=True)
    assert 'value="alice-typed"' in shown
    assert 'aria-invalid="true"' in shown  # the errors are rendered, not a kept blank field

    fresh = app.test_client().get("/accounts/login").get_data(as_text=True)
    assert "alice-typed" not in fresh
    assert "aria-invalid" not in fresh


def test_kept_markup_is_what_wtforms_renders(app: Flask) -> None:
    with app.test_request_context("/accounts/login"):
        form = LoginForm()
        for field, kwargs in ((form.login, {"autofocus": True}), (form.password, {}),
                              (form.remember, {}), (form.next, {})):  # fmt: skip
            expected = field.widget(field, **{**(field.render_kw or {}), **kwargs})
            assert field(**kwargs) == expected  # first render: kept
            assert field(**kwargs) == expected  # second: reused, the same markup
        profile = ProfileForm(user_id=1, data={"email": "bob@example.com"})
        assert 'value="bob@example.com"' in profile.email()
        other = ProfileForm(user_id=2, data={"email": "carol@example.com"})
        assert 'value="carol@example.com"' in other.email()
