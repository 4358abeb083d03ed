"""Second-factor pages: enrol, sign in with a code, step up before sensitive actions.

A user with a second factor is not logged in by a right password alone: the
login view keeps a *pending* sign-in in the (still anonymous) session and
sends the browser to :func:`second_step`; only a right code there starts the
session, with "keep me logged in" as chosen on the password form.

A session remembers when it last saw a right code (``mfa_at``). Admin pages
need one when ``ADMIN_REQUIRE_2FA`` is set (the gate below), and creating an
API key or changing the email needs one younger than
``TWO_FACTOR_FRESH_SECONDS`` (:func:`fresh_code_required`); the same second
step page asks for it, then sends the user back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import (
    abort,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from apps.accounts import admin_bp, bp, models, throttle, twofactor, user_sessions
from apps.accounts.forms import (
    MESSAGES,
    DisableTwoFactorForm,
    EnrolForm,
    RecoveryCodesForm,
    SecondStepForm,
)
from apps.accounts.login import client_ip, is_safe_next, log_in
from apps.accounts.passwords import verify_password
from project.auth import login_required
from project.sessions import current_sid

Page = str | Response | tuple[str, int]
F = TypeVar("F", bound=Callable[..., Any])

PENDING_KEY = "pending_2fa"
PENDING_SECONDS = 300  # the code must follow the password within this
FRESH_KEY = "mfa_at"


# -- the pending sign-in -----------------------------------------------------------------------


def begin_second_step(user: models.User, *, remember: bool, next_url: str) -> Response:
    """After a right password for a user with a second factor: ask for a code first."""
    session[PENDING_KEY] = {
        "user_id": user.id,
        "remember": remember,
        "next": next_url if is_safe_next(next_url) else "",
        "at": int(time.time()),
    }
    return redirect(url_for("accounts.second_step"))


def _pending() -> tuple[models.User, dict[str, Any]] | None:
    """The user waiting for their code in this session, if the wait has not run out."""
    pending = session.get(PENDING_KEY)
    if not isinstance(pending, dict) or not isinstance(pending.get("user_id"), int):
        return None
    if not isinstance(pending.get("at"), int) or time.time() - pending["at"] > PENDING_SECONDS:
        session.pop(PENDING_KEY, None)
        return None
    user = models.get_active_user(pending["user_id"])
    return (user, pending) if user else None


def mark_fresh() -> None:
    session[FRESH_KEY] = int(time.time())


def _is_fresh() -> bool:
    at = session.get(FRESH_KEY)
    return (
        isinstance(at, int) and time.time() - at <= current_app.config["TWO_FACTOR_FRESH_SECONDS"]
    )


def fresh_code_required(back: str) -> Callable[[F], F]:
    """On POST, a user with a second factor must have given a code lately.

    Otherwise they are sent to the second step and then back to *back* (an
    endpoint), where they submit again. An API key cannot give a code, so it
    cannot do these things for such a user at all.
    """

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            user = g.get("user")
            if request.method != "POST" or user is None or not user.has_second_factor:
                return view(*args, **kwargs)
            if g.get("auth_method") != "session":
                abort(403)
            if not _is_fresh():
                flash("Enter a code from your authenticator app to continue.", "info")
                return redirect(url_for("accounts.second_step", next=url_for(back)))
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorate


@admin_bp.before_request
def require_second_factor() -> Response | None:
    """With ``ADMIN_REQUIRE_2FA``, no admin page opens on a password (or an API key) alone."""
    user = g.get("user")
    if not current_app.config["ADMIN_REQUIRE_2FA"] or user is None or not user.is_admin:
        return None  # admin_required answers everyone else
    if g.get("auth_method") != "session":
        abort(403)
    back = request.full_path.rstrip("?")
    if not user.has_second_factor:
        flash("Admin pages need a second factor: set one up first.", "warning")
        return redirect(url_for("accounts.two_factor", next=back))
    if session.get(FRESH_KEY) is None:  # this session began before the factor was added
        flash("Enter a code from your authenticator app to open the admin pages.", "info")
        return redirect(url_for("accounts.second_step", next=back))
    return None


# -- the second step ---------------------------------------------------------------------------


def _throttled(form: SecondStepForm, reset_at: float) -> Response:
    page = render_template(
        "accounts/second_step.html", form=form, throttled=throttle.retry_message(reset_at)
    )
    response = make_response(page, 429)
    response.headers["Retry-After"] = str(max(1, math.ceil(reset_at - 1 - time.time())))
    return response


def _check_code(user: models.User, code: str) -> twofactor.Accepted | None:
    """Verify a code and audit the outcome (a failure, or a recovery code spent)."""
    accepted = twofactor.verify(user.id, code)
    if accepted is None:
        models.audit("2fa.failed", actor_id=user.id, target_user_id=user.id, ip=client_ip())
    elif accepted is twofactor.Accepted.RECOVERY:
        models.audit("2fa.recovery_used", actor_id=user.id, target_user_id=user.id, ip=client_ip())
    return accepted


@bp.route("/login/2fa", methods=["GET", "POST"])
def second_step() -> Page:
    """The code after the password; for a logged-in user, the fresh code a page asked for."""
    pending = None if g.user else _pending()
    if g.user is None and pending is None:
        flash("Log in again: the sign-in took too long or was not started.", "info")
        return redirect(url_for("accounts.login"))
    user = g.user or pending[0]  # type: ignore[index]
    if g.user is not None and not user.has_second_factor:
        return redirect(url_for("accounts.two_factor"))
    form = SecondStepForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        try:
            attempt = throttle.take_code_attempt(user.id)
        except throttle.LoginThrottled as exc:
            return _throttled(form, exc.reset_at)
        accepted = _check_code(user, form.code.data)
        if accepted is None:
            if pending:
                models.record_login_attempt(user.username, user.id, client_ip(), succeeded=False)
            form.code.errors.append(MESSAGES["code_wrong"])
            return render_template("accounts/second_step.html", form=form), 401
        attempt.succeeded()
        target = form.next.data or (pending[1]["next"] if pending else "")
        target = target if is_safe_next(target) else url_for("core.home")
        response = redirect(target)
        if pending:
            models.record_login_attempt(user.username, user.id, client_ip(), succeeded=True)
            log_in(user, remember=bool(pending[1]["remember"]))
            throttle.remember_device(response, user.id)
        mark_fresh()
        if accepted is twofactor.Accepted.RECOVERY:
            left = twofactor.get(user.id)
            flash(
                f"You used a recovery code; {left.recovery_codes_left if left else 0} left. "
                "Make new ones on the two-factor page if you are running out.",
                "warning",
            )
        return response
    return render_template("accounts/second_step.html", form=form), 400 if form.errors else 200


# -- enrolment and management ------------------------------------------------------------------


def _enrol_page(form: EnrolForm | None = None, status: int = 200) -> tuple[str, int]:
    secret = twofactor.pending_secret(g.user.id)
    uri = twofactor.provisioning_uri(secret, g.user.username, current_app.config["APP_NAME"])
    return render_template(
        "accounts/two_factor_enrol.html",
        form=form or EnrolForm(),
        secret=secret,
        qr_code=twofactor.qr_code_data_uri(uri),
        next_url=request.args.get("next", ""),
    ), status


def _manage_page(
    factor: twofactor.SecondFactor,
    disable_form: DisableTwoFactorForm | None = None,
    codes_form: RecoveryCodesForm | None = None,
    status: int = 200,
) -> tuple[str, int]:
    return render_template(
        "accounts/two_factor.html",
        factor=factor,
        disable_form=disable_form or DisableTwoFactorForm(),
        codes_form=codes_form or RecoveryCodesForm(),
    ), status


def _recovery_codes_page(codes: list[str], next_url: str = "") -> Response:
    page = render_template(
        "accounts/recovery_codes.html",
        codes=codes,
        next_url=next_url if is_safe_next(next_url) else "",
    )
    response = make_response(page, 200)
    response.headers["Cache-Control"] = "no-store"  # shown once: no copy in any cache
    return response


@bp.route("/2fa", methods=["GET", "POST"])
@login_required
def two_factor() -> Page:
    """Your second factor: set one up (QR code, then a code), or see and manage it."""
    factor = twofactor.get(g.user.id)
    if factor is not None and factor.enrolled:
        if request.method == "POST":
            abort(409)  # already on: disable it first
        return _manage_page(factor)
    form = EnrolForm()
    if not form.validate_on_submit():
        return _enrol_page(form, 400 if form.errors else 200)
    try:
        attempt = throttle.take_code_attempt(g.user.id)
    except throttle.LoginThrottled as exc:
        form.code.errors.append(throttle.retry_message(exc.reset_at))
        return _enrol_page(form, 429)
    codes = twofactor.confirm(g.user.id, form.code.data)
    if codes is None:
        models.audit(
            "2fa.failed",
            actor_id=g.user.id,
            target_user_id=g.user.id,
            detail="enrolment",
            ip=client_ip(),
        )
        form.code.errors.append(MESSAGES["code_wrong"])
        return _enrol_page(form, 400)
    attempt.succeeded()
    models.audit("2fa.enable", actor_id=g.user.id, target_user_id=g.user.id, ip=client_ip())
    # Sessions that signed in with the password alone end; this one has just shown a code.
    user_sessions.end_all_sessions(g.user.id, keep=current_sid())
    mark_fresh()
    flash("Two-factor sign-in is on. Keep these recovery codes somewhere safe.", "success")
    return _recovery_codes_page(codes, request.args.get("next", ""))


def _code_and_password_ok(form: DisableTwoFactorForm | RecoveryCodesForm) -> bool:
    try:
        attempt = throttle.take_code_attempt(g.user.id)
    except throttle.LoginThrottled as exc:
        form.code.errors.append(throttle.retry_message(exc.reset_at))
        return False
    if isinstance(form, DisableTwoFactorForm) and not verify_password(
        models.get_password_hash(g.user.id), form.password.data
    ):
        form.password.errors.append(MESSAGES["password_wrong"])
        return False
    if _check_code(g.user, form.code.data) is None:
        form.code.errors.append(MESSAGES["code_wrong"])
        return False
    attempt.succeeded()
    mark_fresh()
    return True


def _enrolled_factor() -> twofactor.SecondFactor | None:
    """The user's confirmed second factor; None while there is none (or it is pending)."""
    factor = twofactor.get(g.user.id)
    return factor if factor is not None and factor.enrolled else None


@bp.post("/2fa/disable")
@login_required
def disable_two_factor() -> Page:
    """Turn the second factor off: the password and a code, both now."""
    factor = _enrolled_factor()
    if factor is None:
        return redirect(url_for("accounts.two_factor"))
    form = DisableTwoFactorForm()
    if not form.validate_on_submit() or not _code_and_password_ok(form):
        return _manage_page(factor, disable_form=form, status=400)
    twofactor.remove(g.user.id)
    session.pop(FRESH_KEY, None)
    user_sessions.end_all_sessions(g.user.id, keep=current_sid())
    models.audit("2fa.disable", actor_id=g.user.id, target_user_id=g.user.id, ip=client_ip())
    flash("Two-factor sign-in is off. Your other sessions have been ended.", "success")
    return redirect(url_for("accounts.two_factor"))


@bp.post("/2fa/recovery-codes")
@login_required
def new_recovery_codes() -> Page:
    """Ten new recovery codes in place of the old ones (a code from the app first)."""
    factor = _enrolled_factor()
    if factor is None:
        return redirect(url_for("accounts.two_factor"))
    form = RecoveryCodesForm()
    if not form.validate_on_submit() or not _code_and_password_ok(form):
        return _manage_page(factor, codes_form=form, status=400)
    codes = twofactor.new_recovery_codes(g.user.id)
    models.audit("2fa.recovery_codes", actor_id=g.user.id, target_user_id=g.user.id, ip=client_ip())
    return _recovery_codes_page(codes)
