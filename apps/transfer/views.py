"""Pages (my files, one file and its share links) and downloads."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.datastructures import Range
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.wrappers import Response as WerkzeugResponse

from apps.transfer import accel, models, storage
from apps.transfer.forms import ShareForm
from apps.transfer.models import TransferFile
from apps.transfer.names import content_disposition
from apps.transfer.tus import TUS_VERSION
from project import shared_files
from project.auth import login_required, require_user
from project.forms import Form
from project.shared_files import SharedFile

DOWNLOAD_CSP = "sandbox; default-src 'none'"

# Templates and static files are the package's (apps/transfer/templates, static), as ever.
bp = Blueprint("transfer", "apps.transfer", template_folder="templates", static_folder="static")


@bp.get("/")
@login_required
def index() -> str:
    files = models.list_for(g.user.id)
    return render_template(
        "transfer/index.html",
        files=files,
        used=models.usage(g.user.id),
        quota=current_app.config["TRANSFER_USER_QUOTA"],
        max_size=current_app.config["TRANSFER_MAX_FILE_SIZE"],
        tus_endpoint=url_for("transfer_api.create"),
        tus_version=TUS_VERSION,
    )


def _own_file(file_id: str) -> TransferFile:
    found = models.get(file_id, owner_id=g.user.id)
    if found is None:
        abort(404)
    return found


@bp.route("/files/<file_id>", methods=["GET", "POST"])
@login_required
def detail(file_id: str) -> str | WerkzeugResponse:
    """One file: its checksum, its share links, and a form to make one."""
    file = _own_file(file_id)
    form = ShareForm()
    new_link = None
    if file.complete and form.validate_on_submit():
        share, token = models.create_share(file.id, form.days.data)
        new_link = url_for("transfer.download", file_id=file.id, share=token, _external=True)
        flash("Share link created. Copy it now: it is shown only once.", "success")
    return render_template(
        "transfer/detail.html",
        file=file,
        shares=models.list_shares(file.id),
        form=form,
        new_link=new_link,
    )


@bp.post("/files/<file_id>/shares/<int:share_id>/revoke")
@login_required
def revoke_share(file_id: str, share_id: int) -> WerkzeugResponse:
    file = _own_file(file_id)
    if Form().validate_on_submit() and models.revoke_share(share_id, file.id):
        flash("The link no longer works.", "success")
    return redirect(url_for("transfer.detail", file_id=file.id))


@bp.post("/files/<file_id>/delete")
@login_required
def delete(file_id: str) -> WerkzeugResponse:
    file = _own_file(file_id)
    if Form().validate_on_submit():
        storage.remove(file)
        flash(f"Deleted {file.filename}.", "success")
    return redirect(url_for("transfer.index"))


# -- downloads -----------------------------------------------------------------------


def _complete_file(file_id: str) -> TransferFile:
    file = models.get(file_id)
    if file is None or not file.complete:
        abort(404)
    return file


def _readable_file(file_id: str) -> TransferFile:
    """The owner's file, or one another app lets this user read (a file in a chat room)."""
    file = _complete_file(file_id)
    if g.user.id != file.owner_id and not shared_files.may_read(g.user.id, file.id):
        abort(404)  # as if it did not exist
    return file


def _shared_file(file_id: str, token: str) -> TransferFile:
    file = _complete_file(file_id)
    if not models.share_allows(file.id, token):
        abort(404, "This link has expired or was revoked.")
    return file


@bp.get("/files/<file_id>/download")
def download(file_id: str) -> WerkzeugResponse:
    """A file: anyone with a share link, else its owner or a reader (see :func:`own_download`)."""
    token = request.args.get("share")
    if token is None:
        return own_download(file_id)
    return _send(_shared_file(file_id, token))


@login_required
def own_download(file_id: str) -> WerkzeugResponse:
    """The owner's download, or a reader's (a member of a chat room the file was posted in).

    Anonymous visitors go to the login page (API clients get 401); anyone else
    gets 404, as for a file that does not exist.
    """
    return _send(_readable_file(file_id))


@bp.get("/files.json")
def my_files() -> WerkzeugResponse:
    """The user's finished files as JSON (the chat's "attach a file" list); 401 if anonymous."""
    require_user()
    files = [
        {
            **SharedFile(f.id, f.filename, f.size, f.sha256).as_json(),
            "created_at": f.created_at.isoformat(timespec="seconds") + "Z",
        }
        for f in models.list_for(g.user.id)
        if f.complete and f.sha256
    ]
    response = jsonify(files=files)
    response.cache_control.no_store = True
    return response


def _send(file: TransferFile) -> WerkzeugResponse:
    """The file, whole or in one range, sent with ``sendfile`` under gunicorn.

    werkzeug does the HTTP: ETag (the content's SHA-256, so it is strong),
    Last-Modified, 304, If-Range, one range per request and 416; a request for
    several ranges gets the whole file, as RFC 9110 allows. Only the body is ours:
    werkzeug would wrap a 206 in an 8 KiB block iterator, so a resumed download
    would be the slow one; instead the file is positioned at the range's start
    and handed to the server's ``wsgi.file_wrapper`` too. With
    ``TRANSFER_ACCEL_REDIRECT`` set, nginx sends the body instead (:mod:`.accel`).
    """
    try:
        handle = storage.open_file(file)
    except FileNotFoundError:
        current_app.logger.error("file %s is in the database but not on disk", file.id)
        abort(404)
    response = Response(
        _file_body(handle, file.size),
        mimetype=file.content_type,
        direct_passthrough=True,
    )
    response.call_on_close(handle.close)
    response.content_length = file.size
    response.set_etag(file.sha256 or file.id)
    response.last_modified = file.completed_at
    response.cache_control.private = True
    response.cache_control.no_cache = True  # revalidate: a share link may be revoked
    response.headers["Content-Disposition"] = content_disposition(file.filename, file.id)
    response.headers["Content-Security-Policy"] = DOWNLOAD_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    environ = request.environ
    if _ignore_range(request.range, "HTTP_RANGE" in environ, file.size):
        environ = {k: v for k, v in environ.items() if k != "HTTP_RANGE"}
    try:
        response.make_conditional(environ, accept_ranges=True, complete_length=file.size)
    except RequestedRangeNotSatisfiable:
        handle.close()
        raise
    prefix = current_app.config["TRANSFER_ACCEL_REDIRECT"]
    if prefix and accel.can_hand_over(request, response):
        files = storage.get_storage()
        accel.hand_over(response, files.file_path(file.id), files.root, prefix)
        return response
    if response.status_code == 206 and response.content_range is not None:
        start, stop = response.content_range.start, response.content_range.stop
        assert start is not None and stop is not None
        handle.seek(start)
        response.response = _file_body(handle, stop - start)
    return response


def _ignore_range(parsed: Range | None, sent: bool, size: int) -> bool:
    """Whether to answer with the whole file (200) as if no ``Range`` had been sent.

    RFC 9110 lets a server ignore Range, and every client copes with that, so
    it is the answer to what werkzeug would turn into a 416 wrongly: a header
    that does not parse, a unit other than bytes, several ranges, or a suffix longer than the file
    (``bytes=-N`` with N over the size means the whole file).
    """
    if parsed is None:
        return sent  # malformed: ignored, not refused
    if parsed.units != "bytes" or len(parsed.ranges) > 1:
        return True
    start, stop = parsed.ranges[0]
    return start < 0 and stop is None and -start >= size


def _file_body(handle: BinaryIO, length: int) -> Iterable[bytes]:
    """*length* bytes from the handle's position: zero-copy where the server can.

    gunicorn's ``wsgi.file_wrapper`` sends with ``sendfile(2)`` from the file's
    current position for exactly the response's Content-Length, so it serves a
    range as well as a whole file. Other servers' wrappers (werkzeug's) would
    read to the end of the file, so they get a bounded reader instead.
    """
    environ = request.environ
    if environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](handle, storage.BLOCK_SIZE)
        return wrapper
    return _FileRange(handle, length)


class _FileRange:
    """*length* bytes from a file's current position, in blocks; closing it closes the file.

    A WSGI server calls ``close()`` on the body when it is done with it, sent or
    not; werkzeug does not attach the response's own close to a passthrough body.
    """

    def __init__(self, handle: BinaryIO, length: int) -> None:
        self.handle, self.length = handle, length

    def __iter__(self) -> Iterator[bytes]:
        left = self.length
        while left > 0:
            block = self.handle.read(min(storage.BLOCK_SIZE, left))
            if not block:
                return
            left -= len(block)
            yield block

    def close(self) -> None:
        self.handle.close()
