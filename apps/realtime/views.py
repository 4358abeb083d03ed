"""Chat pages and the room sockets."""

from __future__ import annotations

from flask import abort, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from apps.realtime import bp, chat, models, ws_bp
from apps.realtime.exceptions import RoomExists
from apps.realtime.forms import RoomForm
from project import shared_files
from project.auth import login_required, require_user
from project.extensions import db
from project.revocation import revocable
from project.websocket import serve


@bp.route("/", methods=["GET", "POST"])
@login_required
def rooms() -> str | Response | tuple[str, int]:
    """The list of rooms, and a form to create one."""
    form = RoomForm()
    if form.validate_on_submit():
        try:
            room = models.create_room(form.name.data, g.user.id)
        except RoomExists:
            form.name.errors.append("A room with this name already exists.")
        else:
            return redirect(url_for("realtime.room", name=room.name))
    return render_template("realtime/rooms.html", rooms=models.list_rooms(), form=form), (
        400 if form.errors else 200
    )


@bp.get("/rooms/<name>")
@login_required
def room(name: str) -> str:
    """A chat room: messages, who is online, and a box to write in."""
    found = models.get_room(name)
    if found is None:
        abort(404)
    return render_template("realtime/room.html", room=found, files=shared_files.endpoints())


# werkzeug routes upgrade requests only to rules marked websocket=True; the plain
# rule lets other requests reach the handshake, which answers them with 426.
@ws_bp.get("/rooms/<name>", websocket=True)
@ws_bp.get("/rooms/<name>")
def room_socket(name: str) -> Response:
    """The room's WebSocket; only for logged-in users (401 before any upgrade otherwise)."""
    user = require_user()
    found = models.get_room(name)
    if found is None:
        abort(404)
    after = request.args.get("after", type=int)
    db.release()  # the socket may stay open for hours: hold no pooled connection meanwhile
    return serve(revocable(lambda ws: chat.run_room(ws, found, user, after)), owner=user.id)
