"""Account pages: register, log in and out, profile, password, API keys, sessions, reset."""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import time
from datetime import timedelta

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
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response

from apps.accounts import apikeys, bp, models, throttle, user_sessions
from apps.accounts.exceptions import DuplicateUser
from apps.accounts.forms import (
    MESSAGES,
    ApiKeyForm,
    LoginForm,
    PasswordChangeForm,
    ProfileForm,
    RegisterForm,
    ResetPasswordForm,
    ResetRequestForm,
)
from apps.accounts.login import client_ip, is_safe_next, log_in, log_out
from apps.accounts.passwords import hash_password, needs_rehash, verify_password
from apps.accounts.throttle import register_limits, reset_limits
from apps.accounts.twofactor_views import begin_second_step, fresh_code_required
from project.auth import login_required
from project.background import run_later
from project.forms import Form
from project.links import site_url_for
from project.mail import MailError, send_mail
from project.revocation import session_handle
from project.sessions import current_sid

Page = str | Response | tuple[str, int]
log = logging.getLogger(__name__)


@bp.route("/register", methods=["GET", "POST"])
@register_limits
def register() -> Page:
    """Create an account and log in with it."""
    if g.user:
        return redirect(url_for("accounts.profile"))
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            user = models.create_user(
                form.username.data, form.email.data, hash_password(form.password.data)
            )
        except DuplicateUser as exc:  # taken between validation and insert
            getattr(form, exc.field).errors.append(MESSAGES[f"{exc.field}_taken"])
        else:
            models.audit("user.register", actor_id=user.id, target_user_id=user.id, ip=client_ip())
            log_in(user, remember=False)
            flash(f"Welcome, {user.username}! Your account is ready.", "success")
            return redirect(url_for("accounts.profile"))
    return render_template("accounts/register.html", form=form), 400 if form.errors else 200


@bp.route("/login", methods=["GET", "POST"])
def login() -> Page:
    """Log in with a username or email; ``next`` may only point back into this site."""
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        user = models.get_user_by_login(form.login.data)
        try:
            attempt = throttle.take_login_attempt(form.login.data, user.id if user else None)
        except throttle.LoginThrottled as exc:
            return throttle.throttled_page(exc.reset_at)
        stored = models.get_password_hash(user.id) if user else None
        # verify_password spends the same time when there is no such user.
        if not verify_password(stored, form.password.data) or user is None:
            g.login_failed = True
            models.record_login_attempt(
                form.login.data, user.id if user else None, client_ip(), succeeded=False
            )
            form.password.errors.append(MESSAGES["login_failed"])
        elif not user.is_active:
            g.login_failed = True
            models.record_login_attempt(form.login.data, user.id, client_ip(), succeeded=False)
            form.login.errors.append(MESSAGES["inactive"])
        else:
            attempt.succeeded()
            if stored and needs_rehash(stored):
                models.store_rehashed_password(user.id, hash_password(form.password.data))
            if user.has_second_factor:  # not logged in until a code is given too
                return begin_second_step(
                    user, remember=form.remember.data, next_url=form.next.data or ""
                )
            models.record_login_attempt(form.login.data, user.id, client_ip(), succeeded=True)
            log_in(user, remember=form.remember.data)
            target = form.next.data if is_safe_next(form.next.data) else url_for("core.home")
            response = redirect(target)
            throttle.remember_device(response, user.id)
            return response
    status = 401 if g.get("login_failed") else 400 if form.errors else 200
    return render_template("accounts/login.html", form=form), status


@bp.post("/logout")
def logout() -> Response:
    """Log out (POST only, so no link or image on another site can do it)."""
    log_out()
    flash("You have been logged out.", "info")
    return redirect(url_for("core.home"))


def _profile_page(
    form: ProfileForm | None = None,
    key_form: ApiKeyForm | None = None,
    new_key: str | None = None,
    status: int = 200,
) -> tuple[str, int]:
    user = g.user
    return render_template(
        "accounts/profile.html",
        form=form or ProfileForm(user_id=user.id, data={"email": user.email}),
        key_form=key_form or ApiKeyForm(),
        keys=apikeys.list_keys(user.id),
        sessions=user_sessions.list_sessions(user.id),
        second_factor=user.has_second_factor,
        new_key=new_key,
    ), status


@bp.route("/profile", methods=["GET", "POST"])
@login_required
@fresh_code_required("accounts.profile")
def profile() -> Page:
    """Your account: email, API keys and where you are logged in."""
    if request.method != "POST":
        return _profile_page()  # its form shows the current email
    form = ProfileForm(user_id=g.user.id)
    if form.validate_on_submit():
        try:
            models.update_email(g.user.id, form.email.data)
        except DuplicateUser:
            form.email.errors.append(MESSAGES["email_taken"])
        else:
            models.audit(
                "user.email_change", actor_id=g.user.id, target_user_id=g.user.id, ip=client_ip()
            )
            flash("Your email address has been updated.", "success")
            return redirect(url_for("accounts.profile"))
    return _profile_page(form=form, status=400)


@bp.post("/profile/keys")
@login_required
@fresh_code_required("accounts.profile")
def create_api_key() -> Page:
    """Create an API key; its secret is shown on this one response and never again."""
    key_form = ApiKeyForm()
    if not key_form.validate_on_submit():
        return _profile_page(key_form=key_form, status=400)
    key, full = apikeys.create_key(g.user.id, key_form.label.data)
    models.audit(
        "apikey.create",
        actor_id=g.user.id,
        target_user_id=g.user.id,
        detail=f"{key.key_id} {key.label}",
        ip=client_ip(),
    )
    page, _ = _profile_page(new_key=full)
    response = make_response(page, 201)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/profile/keys/<int:key_pk>/revoke")
@login_required
def revoke_api_key(key_pk: int) -> Response:
    """Revoke one of your API keys."""
    if not apikeys.revoke_key(key_pk, user_id=g.user.id):
        abort(404)
    models.audit(
        "apikey.revoke",
        actor_id=g.user.id,
        target_user_id=g.user.id,
        detail=str(key_pk),
        ip=client_ip(),
    )
    flash("The API key has been revoked.", "success")
    return redirect(url_for("accounts.profile"))


@bp.post("/profile/sessions/end")
@login_required
def end_session() -> Response:
    """End one of your sessions (another device), or all the others."""
    handle = request.form.get("session", "")
    current = current_sid()
    if handle == "others":
        ended = user_sessions.end_all_sessions(g.user.id, keep=current)
        flash(f"Ended {ended} other session{'s' if ended != 1 else ''}.", "success")
    elif handle == session_handle(current):
        log_out()
        flash("You have been logged out.", "info")
        return redirect(url_for("core.home"))
    elif user_sessions.end_session(g.user.id, handle):
        flash("That session has been ended.", "success")
    else:
        abort(404)
    models.audit("session.end", actor_id=g.user.id, target_user_id=g.user.id, ip=client_ip())
    return redirect(url_for("accounts.profile"))


@bp.route("/password", methods=["GET", "POST"])
@login_required
def password_change() -> Page:
    """Change your password; you stay logged in here and every other session ends."""
    form = PasswordChangeForm(username=g.user.username, email=g.user.email)
    if form.validate_on_submit():
        if not verify_password(models.get_password_hash(g.user.id), form.current_password.data):
            form.current_password.errors.append(MESSAGES["password_wrong"])
        else:
            models.set_password_hash(g.user.id, hash_password(form.new_password.data))
            remember = bool(session.get("remember"))
            user_sessions.end_all_sessions(g.user.id)
            log_in(g.user, remember=remember)  # a new session id for this browser
            models.audit(
                "user.password_change", actor_id=g.user.id, target_user_id=g.user.id, ip=client_ip()
            )
            flash("Your password has been changed. Your other sessions have been ended.", "success")
            return redirect(url_for("accounts.profile"))
    return render_template("accounts/password.html", form=form), 400 if form.errors else 200


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def send_reset_link(user: models.User) -> None:
    """Email a single-use, expiring link; only its hash is stored."""
    token = secrets.token_urlsafe(32)
    lifetime = timedelta(seconds=current_app.config["PASSWORD_RESET_SECONDS"])
    models.create_reset_token(user.id, _token_hash(token), lifetime)
    link = site_url_for("accounts.reset_password", token=token)
    minutes = int(lifetime.total_seconds() // 60)
    send_mail(
        user.email,
        "Reset your password",
        f"Hello {user.username},\n\nSomeone (hopefully you) asked to reset the password of "
        f"your account. Open this link within {minutes} minutes to choose a new one:\n\n"
        f"{link}\n\nIf you did not ask for this, ignore this email: your password stays "
        "as it is.\n",
    )


def _mail_reset_link(email: str, ip: str, retry_delays: tuple[float, ...] = (1.0, 4.0)) -> None:
    """Mail a reset link if *email* has an active account (run after the response)."""
    user = models.get_user_by_login(email)
    if user is None or not user.is_active:
        return
    for delay in (*retry_delays, None):
        try:
            send_reset_link(user)
        except MailError as exc:
            if delay is None:
                log.error("password reset email for user %d not sent: %s", user.id, exc)
                return
            log.warning("password reset email for user %d failed (%s); retrying", user.id, exc)
            time.sleep(delay)
        else:
            break
    models.audit("user.reset_requested", actor_id=None, target_user_id=user.id, ip=ip)


@bp.route("/password/reset", methods=["GET", "POST"])
@reset_limits
def reset_request() -> Page:
    """Ask for a reset link; the answer is the same whether or not the email has an account."""
    form = ResetRequestForm()
    if form.validate_on_submit():
        # Looking the account up, storing a token and mailing happen after the answer, so
        # the answer takes the same time whether or not the email has an account.
        run_later(
            functools.partial(_mail_reset_link, form.email.data, client_ip()),
            "password reset email",
        )
        flash("If an account uses that email, a link to reset its password is on its way.", "info")
        return redirect(url_for("accounts.login"))
    return render_template("accounts/reset_request.html", form=form), 400 if form.errors else 200


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str) -> Page:
    """Choose a new password with a reset link; the link works once."""
    digest = _token_hash(token)
    user_id = models.reset_token_user(digest)
    user = models.get_user(user_id) if user_id is not None else None
    if user is None or not user.is_active:
        return render_template("accounts/reset_invalid.html"), 404
    form = ResetPasswordForm(username=user.username, email=user.email)
    if form.validate_on_submit():
        if models.consume_reset_token(digest) != user.id:  # used a moment ago by another request
            return render_template("accounts/reset_invalid.html"), 404
        models.set_password_hash(user.id, hash_password(form.password.data))
        ended = user_sessions.end_all_sessions(user.id)
        models.audit(
            "user.password_reset", actor_id=user.id, target_user_id=user.id, ip=client_ip()
        )
        keys = [key for key in apikeys.list_keys(user.id) if key.active]
        if not keys:
            flash("Your password has been reset. Log in with the new one.", "success")
            return redirect(url_for("accounts.login"))
        # Whoever had the old password may also have made keys: show them, one click to revoke.
        grant = _revoke_grants().dumps(user.id)
        page = render_template(
            "accounts/reset_done.html", keys=keys, ended=ended, grant=grant, form=Form()
        )
        return _private(make_response(page, 200))
    response = make_response(
        render_template("accounts/reset_password.html", form=form), 400 if form.errors else 200
    )
    return _private(response)


def _private(response: Response) -> Response:
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in this page's URL
    response.headers["Cache-Control"] = "no-store"
    return response


REVOKE_GRANT_SECONDS = 900  # the "revoke all keys" button after a reset works this long


def _revoke_grants() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="accounts.reset-revoke-keys")  # type: ignore[arg-type]


@bp.post("/password/reset/keys")
def reset_revoke_keys() -> Page:
    """After a reset: revoke every API key of the account in one click (no login needed)."""
    form = Form()
    if not form.validate_on_submit():
        abort(400)
    try:
        user_id = _revoke_grants().loads(
            request.form.get("grant", ""), max_age=REVOKE_GRANT_SECONDS
        )
    except BadSignature:
        return render_template("accounts/reset_invalid.html"), 404
    revoked = apikeys.revoke_all(int(user_id))
    models.audit("apikey.revoke_all", actor_id=user_id, target_user_id=user_id, ip=client_ip())
    flash(
        f"Your password has been reset and {revoked} API key(s) revoked. Log in with the new "
        "password.",
        "success",
    )
    return redirect(url_for("accounts.login"))
