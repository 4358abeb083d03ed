"""Throttling of logins, registrations and reset emails (Flask-Limiter).

Failed logins count against both the account named in the form and the
client's address, in two windows each (settings ``LOGIN_LIMIT_ACCOUNT`` and
``LOGIN_LIMIT_ADDRESS``): the short window slows a guesser down, the long one
refuses them for a while. Only failures count (``deduct_when``). The account
key is the name as typed, whether or not such an account exists, so the
answer for an unknown user is the same as for a real one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, g, make_response, render_template, request
from flask_limiter import RequestLimit
from flask_limiter.util import get_remote_address

from apps.accounts.models import normalize_email, username_key
from project.extensions import limiter


def _login_account() -> str:
    return username_key((request.form.get("login") or "").strip())[:150]


def _reset_email() -> str:
    return normalize_email(request.form.get("email") or "")[:254]


def _login_failed(response: Response) -> bool:
    return bool(g.get("login_failed"))


def retry_message(reset_at: float) -> str:
    # The limiter's reset time runs one second past the end of the window.
    minutes = max(1, math.ceil((reset_at - 1 - time.time()) / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many attempts. Try again in {minutes} {unit}."


def _throttled(limit: RequestLimit) -> Response:
    """The page of the throttled form, with the wait in words and in Retry-After."""
    from apps.accounts.forms import LoginForm, RegisterForm, ResetRequestForm

    templates: dict[str, tuple[str, Any]] = {
        "accounts.login": ("accounts/login.html", LoginForm),
        "accounts.register": ("accounts/register.html", RegisterForm),
        "accounts.reset_request": ("accounts/reset_request.html", ResetRequestForm),
    }
    template, form_class = templates[request.endpoint or "accounts.login"]
    message = retry_message(limit.reset_at)
    response = make_response(render_template(template, form=form_class(), throttled=message), 429)
    response.headers["Retry-After"] = str(max(1, math.ceil(limit.reset_at - 1 - time.time())))
    return response


def _config(name: str) -> Callable[[], str]:
    return lambda: current_app.config[name]


def login_limits(view: Callable[..., Any]) -> Callable[..., Any]:
    rules = (
        ("LOGIN_LIMIT_ACCOUNT", _login_account, "login-account"),
        ("LOGIN_LIMIT_ADDRESS", get_remote_address, "login-address"),
    )
    for setting, key_func, scope in rules:
        view = limiter.limit(
            _config(setting),
            key_func=key_func,
            scope=scope,
            methods=["POST"],
            deduct_when=_login_failed,
            on_breach=_throttled,
        )(view)
    return view


def register_limits(view: Callable[..., Any]) -> Callable[..., Any]:
    return limiter.limit(
        _config("REGISTER_LIMIT"), methods=["POST"], scope="register", on_breach=_throttled
    )(view)


def reset_limits(view: Callable[..., Any]) -> Callable[..., Any]:
    by_email = limiter.limit(
        _config("RESET_LIMIT"),
        key_func=_reset_email,
        methods=["POST"],
        scope="reset-email",
        on_breach=_throttled,
    )
    by_address = limiter.limit(
        _config("RESET_LIMIT"), methods=["POST"], scope="reset-address", on_breach=_throttled
    )
    return by_email(by_address(view))
