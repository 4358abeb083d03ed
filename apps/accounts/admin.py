"""Admin pages: dashboard, user list with search and bulk actions, user page, audit log.

Admins only: anonymous visitors are sent to the login page, other users get 403.
Every change is written to the audit log with who, what, whom, when and from where.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from apps.accounts import admin_bp, apikeys, audit_log, listing, models, twofactor, user_sessions
from apps.accounts.exceptions import DuplicateUser, LastAdminError
from apps.accounts.forms import BULK_ACTIONS, MESSAGES, AdminUserForm, BulkActionForm
from apps.accounts.login import client_ip
from apps.accounts.views import send_reset_link
from project.auth import admin_required
from project.extensions import db
from project.mail import MailError

PER_PAGE = 50
FLAGS = {"": None, "yes": True, "no": False}


def _audit(action: str, target: int | None = None, detail: str = "") -> None:
    models.audit(action, actor_id=g.user.id, target_user_id=target, detail=detail, ip=client_ip())


@admin_bp.get("/")
@admin_required
def dashboard() -> str:
    """Counts an admin checks every day."""
    counts: dict[str, object] = {
        "users": listing.count_users(listing.UserQuery()),
        "active_users": listing.count_users(listing.UserQuery(active=True)),
        "admins": listing.count_users(listing.UserQuery(admin=True)),
        "active_sessions": user_sessions.count_sessions(),
        **models.login_counts_today(),
    }
    return render_template("accounts/admin/dashboard.html", counts=counts)


@admin_bp.get("/accounts/")
@admin_required
def user_list() -> str:
    """Users: search by username or email prefix, filter, sort, page by seeking (any size)."""
    sort = request.args.get("sort", "created")
    sort = sort if sort in listing.SORTS else "created"
    joined, joined_error = _joined_date()
    if joined is not None:
        sort = "created"  # the date jumps within the order users joined in
    query = listing.UserQuery(
        search=request.args.get("q", "").strip()[:254],
        active=FLAGS.get(request.args.get("active", "")),
        admin=FLAGS.get(request.args.get("admin", "")),
        sort=sort,
        descending=request.args.get("dir", "desc") != "asc",
        after=_cursor("after", sort),
        before=_cursor("before", sort),
        joined=joined,
        last=request.args.get("page") == "last",
        per_page=PER_PAGE,
    )
    page = listing.list_users(query)
    # The links keep the search, filters and order; each sets its own place in the list.
    args = {
        k: v
        for k, v in request.args.items()
        if k not in ("after", "before", "page", "joined", "sort") and v
    }
    if sort != "created":
        args["sort"] = sort
    return render_template(
        "accounts/admin/user_list.html",
        page=page,
        query=query,
        joined_error=joined_error,
        bulk_form=BulkActionForm(),
        args=args,
    )


def _cursor(name: str, sort: str) -> listing.Cursor | None:
    text = request.args.get(name)
    return listing.Cursor.decode(text, sort) if text else None


def _joined_date() -> tuple[date | None, str | None]:
    text = request.args.get("joined", "").strip()
    if not text:
        return None, None
    try:
        return date.fromisoformat(text), None
    except ValueError:
        return None, "Enter a date as YYYY-MM-DD."


@admin_bp.post("/accounts/bulk")
@admin_required
def bulk_action() -> str | Response | tuple[str, int]:
    """Bulk deactivate/activate/delete: a confirmation page first, then the change."""
    form = BulkActionForm()
    if not form.validate_on_submit():
        flash(" ".join(e for errors in form.errors.values() for e in errors), "error")
        return redirect(url_for("admin.user_list"))
    users = [u for u in (models.get_user(i) for i in set(form.user_ids.data)) if u]
    if not users:
        abort(404)
    if form.confirmed.data != "yes":
        form.confirmed.data = "yes"
        return render_template(
            "accounts/admin/bulk_confirm.html",
            form=form,
            users=users,
            action=next(c.label for c in BULK_ACTIONS if c.value == form.action.data),
        )
    done, refused = 0, []
    for user in users:
        if user.id == g.user.id and form.action.data in ("deactivate", "delete"):
            refused.append(f"{user.username} (yourself)")
            continue
        try:
            if form.action.data == "delete":
                user_sessions.end_all_sessions(user.id)
                models.delete_user(user.id)
            else:
                models.set_flags(user.id, is_active=form.action.data == "activate")
                if form.action.data == "deactivate":
                    user_sessions.end_all_sessions(user.id)
        except LastAdminError:
            refused.append(f"{user.username} (last active admin)")
            continue
        _audit(f"admin.bulk_{form.action.data}", user.id, user.username)
        done += 1
    flash(
        f"{form.action.data.capitalize()}: {done} user{'s' if done != 1 else ''} done.", "success"
    )
    if refused:
        flash("Not changed: " + ", ".join(refused), "warning")
    return redirect(url_for("admin.user_list"))


def _user_or_404(user_id: int) -> models.User:
    user = models.get_user(user_id)
    if user is None:
        abort(404)
    return user


@admin_bp.route("/accounts/<int:user_id>", methods=["GET", "POST"])
@admin_required
def user_detail(user_id: int) -> str | Response | tuple[str, int]:
    """One user: edit email and flags, send a reset link, end sessions, revoke keys."""
    user = _user_or_404(user_id)
    form = AdminUserForm(
        user_id=user.id,
        data={"email": user.email, "is_active": user.is_active, "is_admin": user.is_admin},
    )
    if form.validate_on_submit():
        try:
            _apply_changes(user, form)
        except LastAdminError:
            form.is_admin.errors.append(
                "The site must keep at least one active admin: make someone else admin first."
            )
        except DuplicateUser:
            form.email.errors.append(MESSAGES["email_taken"])
        else:
            flash(f"{user.username} has been updated.", "success")
            return redirect(url_for("admin.user_detail", user_id=user.id))
    return render_template(
        "accounts/admin/user_detail.html",
        user=user,
        form=form,
        keys=apikeys.list_keys(user.id),
        sessions=user_sessions.list_sessions(user.id),
        second_factor=twofactor.get(user.id),
        audit=audit_log.page(target_user_id=user.id, per_page=20).rows,
    ), 400 if form.errors else 200


def _apply_changes(user: models.User, form: AdminUserForm) -> None:
    """Save the form's changes all together, or none of them (e.g. on LastAdminError)."""
    changes: list[str] = []
    flags: dict[str, Any] = {}
    if form.is_active.data != user.is_active:
        flags["is_active"] = form.is_active.data
    if form.is_admin.data != user.is_admin:
        flags["is_admin"] = form.is_admin.data
    with db.transaction():
        if models.normalize_email(form.email.data) != user.email:
            models.update_email(user.id, form.email.data)
            changes.append(f"email {user.email} -> {models.normalize_email(form.email.data)}")
        if flags:
            models.set_flags(user.id, **flags)
            changes += [f"{name} -> {value}" for name, value in flags.items()]
    if flags.get("is_active") is False:
        user_sessions.end_all_sessions(user.id)  # deactivation takes effect at once
    if changes:
        _audit("admin.user_update", user.id, "; ".join(changes))


@admin_bp.post("/accounts/<int:user_id>/reset-link")
@admin_required
def send_user_reset_link(user_id: int) -> Response:
    """Email the user a password-reset link."""
    user = _user_or_404(user_id)
    if not user.is_active:
        flash(
            f"{user.username} is deactivated: activate the account before sending a link.", "error"
        )
        return redirect(url_for("admin.user_detail", user_id=user.id))
    try:
        send_reset_link(user)
    except MailError:
        flash("The email could not be sent; check the mail settings.", "error")
    else:
        _audit("admin.reset_link", user.id)
        flash(f"A password-reset link has been sent to {user.email}.", "success")
    return redirect(url_for("admin.user_detail", user_id=user.id))


@admin_bp.post("/accounts/<int:user_id>/end-sessions")
@admin_required
def end_user_sessions(user_id: int) -> Response:
    """End every session of the user at once."""
    user = _user_or_404(user_id)
    ended = user_sessions.end_all_sessions(user.id)
    _audit("admin.end_sessions", user.id, f"{ended} ended")
    flash(f"Ended {ended} session{'s' if ended != 1 else ''} of {user.username}.", "success")
    return redirect(url_for("admin.user_detail", user_id=user.id))


@admin_bp.post("/accounts/<int:user_id>/two-factor/reset")
@admin_required
def reset_user_two_factor(user_id: int) -> Response:
    """Remove the user's second factor (a lost device); their sessions end."""
    user = _user_or_404(user_id)
    if twofactor.reset(user.id, actor_id=g.user.id, ip=client_ip()):
        flash(
            f"{user.username}'s second factor has been removed and their sessions ended; "
            "they sign in with the password and can set one up again.",
            "success",
        )
    else:
        flash(f"{user.username} has no second factor.", "info")
    return redirect(url_for("admin.user_detail", user_id=user.id))


@admin_bp.post("/accounts/<int:user_id>/keys/<int:key_pk>/revoke")
@admin_required
def revoke_user_key(user_id: int, key_pk: int) -> Response:
    """Revoke one of the user's API keys."""
    user = _user_or_404(user_id)
    if not apikeys.revoke_key(key_pk, user_id=user.id):
        abort(404)
    _audit("admin.apikey_revoke", user.id, str(key_pk))
    flash("The API key has been revoked.", "success")
    return redirect(url_for("admin.user_detail", user_id=user.id))


@admin_bp.get("/audit/", endpoint="audit_log")
@admin_required
def audit_log_page() -> str:
    """The audit log, newest first, filterable by action and by user, paged by seeking."""
    action = request.args.get("action", "")
    target = request.args.get("user", type=int)
    page = audit_log.page(
        action,
        target,
        after=_cursor("after", "created"),
        before=_cursor("before", "created"),
        oldest=request.args.get("page") == "last",
        per_page=PER_PAGE,
    )
    return render_template(
        "accounts/admin/audit.html",
        page=page,
        actions=audit_log.actions(),
        action=action,
        target=target,
        args={k: v for k, v in request.args.items() if k in ("action", "user") and v},
    )
