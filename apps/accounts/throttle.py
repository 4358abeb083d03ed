"""Throttling of logins, registrations and reset emails.

**Logins** are counted *before* the password is checked: each attempt takes
one from the account's allowance and one from the client address's
(``LOGIN_LIMIT_ACCOUNT``, ``LOGIN_LIMIT_ADDRESS``; fixed windows, atomic in
Redis when it is there), and a right password gives both back. So however
many requests arrive at once, at most the limit are ever verified (counting
after the check let 20 simultaneous guesses through a limit of 5); the rest
get 429 with the wait. The account key is the name as typed, whether or not
such an account exists, so an unknown user is answered like a real one.

**Device cookies** (OWASP, "Slow down online guessing attacks with device
cookies") keep the owner out of a lockout that strangers cause: a browser
that signed in to the account before carries a signed cookie naming the
account and a random nonce, and its attempts count against that nonce
instead of the account. Twenty failures from anywhere else still lock the
account for everyone without the cookie.

Registrations and reset emails use Flask-Limiter's decorators.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Response, current_app, make_response, render_template, request, url_for
from flask_limiter.util import get_remote_address
from itsdangerous import BadSignature, URLSafeTimedSerializer
from limits import RateLimitItem, parse_many
from limits.strategies import FixedWindowRateLimiter
from werkzeug.wrappers import Response as BaseResponse

from apps.accounts.models import normalize_email, username_key
from project.extensions import limiter

DEVICE_COOKIE = "device"
DEVICE_COOKIE_DAYS = 180
DEVICE_ACCOUNTS = 5  # accounts one browser remembers (a shared computer), newest first

Charge = tuple[RateLimitItem, tuple[str, ...]]


def _reset_email() -> str:
    return normalize_email(request.form.get("email") or "")[:254]


def retry_message(reset_at: float) -> str:
    # The limiter's reset time runs one second past the end of the window.
    minutes = max(1, math.ceil((reset_at - 1 - time.time()) / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many attempts. Try again in {minutes} {unit}."


def throttled_page(reset_at: float) -> Response:
    """The page of the throttled form, with the wait in words and in Retry-After."""
    from apps.accounts.forms import LoginForm, RegisterForm, ResetRequestForm

    templates: dict[str, tuple[str, Any]] = {
        "accounts.login": ("accounts/login.html", LoginForm),
        "accounts.register": ("accounts/register.html", RegisterForm),
        "accounts.reset_request": ("accounts/reset_request.html", ResetRequestForm),
    }
    template, form_class = templates[request.endpoint or "accounts.login"]
    message = retry_message(reset_at)
    response = make_response(render_template(template, form=form_class(), throttled=message), 429)
    response.headers["Retry-After"] = str(max(1, math.ceil(reset_at - 1 - time.time())))
    return response


def _config(name: str) -> Callable[[], str]:
    return lambda: current_app.config[name]


# -- logins ------------------------------------------------------------------------------------


class LoginThrottled(Exception):
    """No attempt is left in one of the windows; ``reset_at`` is when it reopens."""

    def __init__(self, reset_at: float) -> None:
        super().__init__("too many login attempts")
        self.reset_at = reset_at


@dataclass
class LoginAttempt:
    """Attempts taken before the password is checked; a right password gives them back."""

    charges: list[Charge] = field(default_factory=list)

    def succeeded(self) -> None:
        _give_back(self.charges)
        self.charges = []


def _windows() -> FixedWindowRateLimiter:
    return FixedWindowRateLimiter(limiter.storage)


def _give_back(charges: list[Charge]) -> None:
    storage = limiter.storage
    for item, identifiers in charges:
        storage.incr(item.key_for(*identifiers), item.get_expiry(), amount=-1)


def take_login_attempt(login: str, user_id: int | None) -> LoginAttempt:
    """Count one attempt for *login* (and this address) before its password is checked.

    Args:
        login: the name as typed (the account's key whether or not it exists).
        user_id: the account it names, if any: its device cookie, if this browser
            has one, is counted instead of the account.

    Raises:
        LoginThrottled: a window is full; nothing is counted.
    """
    nonce = device_nonce(user_id) if user_id is not None else None
    account = ("login-device", nonce) if nonce else ("login-account", username_key(login)[:150])
    return _take(account, ("login-address", get_remote_address()))


def take_code_attempt(user_id: int) -> LoginAttempt:
    """Count one second-factor code for *user_id* (and this address) before it is checked.

    The same limits as passwords, in windows of their own: whoever has the password
    still gets only ``LOGIN_LIMIT_ACCOUNT`` guesses at a code. A browser that completed
    a sign-in to the account before counts against its device cookie instead.

    Raises:
        LoginThrottled: a window is full; nothing is counted.
    """
    nonce = device_nonce(user_id)
    account = ("code-device", nonce) if nonce else ("code-account", str(user_id))
    return _take(account, ("code-address", get_remote_address()))


def _take(account: tuple[str, ...], address: tuple[str, ...]) -> LoginAttempt:
    rules = (
        (current_app.config["LOGIN_LIMIT_ACCOUNT"], account),
        (current_app.config["LOGIN_LIMIT_ADDRESS"], address),
    )
    windows = _windows()
    attempt = LoginAttempt()
    for limit, identifiers in rules:
        for item in parse_many(limit):
            if not windows.hit(item, *identifiers):
                _give_back([*attempt.charges, (item, identifiers)])
                raise LoginThrottled(windows.get_window_stats(item, *identifiers).reset_time)
            attempt.charges.append((item, identifiers))
    return attempt


def _device_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="accounts.device-cookie")  # type: ignore[arg-type]


def _device_entries() -> list[list[Any]]:
    """``[user_id, nonce]`` pairs from this browser's device cookie (none if forged or old)."""
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return []
    try:
        entries = _device_serializer().loads(raw, max_age=DEVICE_COOKIE_DAYS * 86400)
    except BadSignature:
        return []
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, list) and len(e) == 2 and isinstance(e[1], str)]


def device_nonce(user_id: int) -> str | None:
    """The nonce this browser holds for *user_id*'s account, if it signed in to it before."""
    return next((nonce for uid, nonce in _device_entries() if uid == user_id), None)


def remember_device(response: BaseResponse, user_id: int) -> None:
    """After a right password: a fresh device cookie entry for this account."""
    others = [entry for entry in _device_entries() if entry[0] != user_id]
    entries = [[user_id, secrets.token_urlsafe(16)], *others][:DEVICE_ACCOUNTS]
    response.set_cookie(
        DEVICE_COOKIE,
        _device_serializer().dumps(entries),
        max_age=DEVICE_COOKIE_DAYS * 86400,
        path=url_for("accounts.login"),  # sent only with logins (and their second step)
        secure=current_app.config["SESSION_COOKIE_SECURE"],
        httponly=True,
        samesite="Strict",
    )


# -- registrations and reset emails ------------------------------------------------------------


def _throttled(limit: Any) -> Response:
    return throttled_page(limit.reset_at)


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
