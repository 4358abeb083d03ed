"""Form rendering: inputs' markup is kept and reused, and nothing of a visitor's leaks.

``project.forms.Form`` keeps each input's markup with a marker where its value
goes, and puts each request's own value in: the attacks are a kept field
carrying one visitor's CSRF token, typed login or email to the next visitor,
and a value that breaks out of its attribute.
"""

from __future__ import annotations

import re

import pytest
from flask import Flask, g, session
from flask_wtf.csrf import generate_csrf, validate_csrf
from itsdangerous import URLSafeTimedSerializer
from werkzeug.datastructures import MultiDict
from wtforms import ValidationError

from apps.accounts.forms import AdminUserForm, LoginForm, ProfileForm
from project.csrf_tokens import csrf_token
from tests.conftest import CSRF_META, PASSWORD, create_account, log_in

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


def wtforms_markup(field, **kwargs):  # type: ignore[no-untyped-def]
    """The field as WTForms renders it, without the kept markup."""
    return field.widget(field, **{**(field.render_kw or {}), **kwargs})


def test_inputs_with_values_render_exactly_as_wtforms_does(app: Flask) -> None:
    hostile = 'x" autofocus onfocus="alert(1)<script>&amp;'
    with app.test_request_context("/accounts/login", method="POST"):
        typed = LoginForm(MultiDict({"login": hostile, "password": "secret", "remember": "y"}))
        for field, kwargs in ((typed.login, {"autofocus": True}), (typed.password, {}),
                              (typed.remember, {}), (typed.csrf_token, {})):  # fmt: skip
            for _ in range(2):  # first render keeps the markup, the second reuses it
                assert field(**kwargs) == wtforms_markup(field, **kwargs)
        login = typed.login()
        assert 'onfocus="' not in login and "<script>" not in login
        assert "&#34; autofocus onfocus=&#34;alert(1)&lt;script&gt;&amp;amp;" in login
        assert "secret" not in typed.password()  # a password is never sent back
        assert " checked" in typed.remember()

        blank = LoginForm(MultiDict())
        assert " checked" not in blank.remember()  # the ticked box was not kept for everyone
        assert blank.login() == wtforms_markup(blank.login)
        assert hostile not in blank.login()

        admin = AdminUserForm(
            user_id=1, data={"email": "a@example.com", "is_active": True, "is_admin": False}
        )
        for field in (admin.email, admin.is_active, admin.is_admin):
            assert field() == wtforms_markup(field)


def test_each_form_on_a_page_carries_the_same_token_as_the_page(app: Flask) -> None:
    with app.app_context():
        create_account("dora")
    client = app.test_client()
    assert log_in(client, "dora").status_code == 302
    profile = client.get("/accounts/profile").get_data(as_text=True)
    tokens = set(HIDDEN_TOKEN.findall(profile))
    meta = CSRF_META.search(profile)
    assert meta and tokens == {meta.group(1)}  # the email form and the key form alike
    assert 'value="dora@example.com"' in profile  # her own email, in her form


def test_the_pages_token_is_one_flask_wtf_checks(app: Flask) -> None:
    """project.csrf_tokens signs the session's secret as Flask-WTF does; its check accepts it."""
    with app.test_request_context("/"):
        token = csrf_token()
        assert csrf_token() == token  # one token per request
        validate_csrf(token)  # raises if Flask-WTF cannot read it
        secret = session["csrf_token"]
        serializer = URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token")  # type: ignore[arg-type]
        assert serializer.loads(token) == secret
        del g.csrf_token  # Flask-WTF's own token for the same secret passes the same check
        validate_csrf(generate_csrf())
        forged = URLSafeTimedSerializer("another key", salt="wtf-csrf-token").dumps(secret)
        with pytest.raises(ValidationError):
            validate_csrf(forged)
