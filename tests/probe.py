"""A blueprint of test-only routes that exercise the project's plumbing from outside."""

from __future__ import annotations

from flask import Blueprint, abort, g, jsonify, request, session

from apps.accounts.login import log_in
from apps.accounts.models import get_user
from project.auth import login_required
from project.extensions import db

probe = Blueprint("probe", __name__)


@probe.get("/_probe/session")
def write_session():  # type: ignore[no-untyped-def]
    session["probe"] = request.args.get("value", "")
    return jsonify(sid=session.sid)


@probe.get("/_probe/session/read")
def read_session():  # type: ignore[no-untyped-def]
    return jsonify(probe=session.get("probe"))


@probe.get("/_probe/login/<int:user_id>")
def login_as(user_id: int):  # type: ignore[no-untyped-def]
    user = get_user(user_id)
    assert user is not None
    log_in(user, remember=request.args.get("remember") == "1")
    return jsonify(ok=True)


@probe.get("/_probe/whoami")
def whoami():  # type: ignore[no-untyped-def]
    return jsonify(user=g.user.username if g.user else None)


@probe.post("/_probe/form")
def form_post():  # type: ignore[no-untyped-def]
    return jsonify(ok=True, value=request.form.get("value"))


@probe.post("/api/_probe/json")
def json_post():  # type: ignore[no-untyped-def]
    return jsonify(ok=True, value=(request.get_json(silent=True) or {}).get("value"))


@probe.get("/_probe/row")
def read_row():  # type: ignore[no-untyped-def]
    return jsonify(db.fetch_one("SELECT COUNT(*) AS n FROM users"))


@probe.get("/_probe/boom")
def boom():  # type: ignore[no-untyped-def]
    db.fetch_one("SELECT 1 AS one")  # holds a pooled connection when it raises
    raise RuntimeError("secret internal detail")


@probe.get("/api/_probe/boom")
def api_boom():  # type: ignore[no-untyped-def]
    raise RuntimeError("secret internal detail")


@probe.get("/_probe/tx-boom")
def transaction_boom():  # type: ignore[no-untyped-def]
    with db.transaction():
        db.execute(
            "INSERT INTO users (username, username_key, email, password_hash, created_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            ("tx", "tx", "tx@example.com", "x", "2026-01-01 00:00:00"),
        )
        abort(500)


@probe.get("/_probe/private")
@login_required
def private():  # type: ignore[no-untyped-def]
    return jsonify(user=g.user.username)
