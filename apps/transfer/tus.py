"""tus 1.0.0 server at ``/api/transfer/uploads``: resumable, checksummed uploads.

Extensions: creation, creation-with-upload, checksum (sha1, sha256, md5),
termination, expiration (https://tus.io/protocols/resumable-upload). Bodies
stream to disk through :func:`apps.transfer.storage.receive` in 1 MiB blocks;
nothing about an upload lives in a worker's memory, so any worker can take
its next PATCH.

Authentication is the app's: the session cookie (with the CSRF token in an
``X-CSRFToken`` header, as for any state-changing request) or an API key in
``Authorization: Bearer``. Someone else's upload is a 404, as if it did not exist.

Besides the standard metadata keys ``filename`` and ``filetype``, a client may
declare the whole file's ``sha256`` (hex) in ``Upload-Metadata``: the upload
then becomes a file only if the bytes match it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from apps.transfer import models, storage, tusmeta
from apps.transfer.exceptions import (
    BadRequest,
    OffsetMismatch,
    TransferError,
    UnsupportedMediaType,
    UploadExpired,
    UploadGone,
    UploadTooLong,
)
from apps.transfer.models import TransferFile
from apps.transfer.names import clean_filename
from apps.transfer.tusmeta import TUS_VERSION
from apps.transfer.wire import SHA256_HEX
from project.auth import login_required

api_bp = Blueprint("transfer_api", "apps.transfer")

EXTENSIONS = "creation,creation-with-upload,checksum,termination,expiration"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
_INTEGER = re.compile(r"^[0-9]{1,20}$")


#: The HTTP status of each refusal's code (:mod:`apps.transfer.exceptions`): the one place
#: the tus server turns the transfer app's errors into HTTP.
HTTP_STATUS = {
    "bad_request": 400,
    "not_found": 404,
    "conflict": 409,
    "expired": 410,
    "too_large": 413,
    "quota": 413,
    "unsupported_media_type": 415,
    "busy": 423,
    "checksum_mismatch": 460,
    "disk_full": 507,
}


@api_bp.errorhandler(TransferError)
def _transfer_error(exc: TransferError) -> Response:
    headers = dict(exc.headers)
    if isinstance(exc, OffsetMismatch):
        headers.setdefault("Upload-Offset", str(exc.expected))
    return _error(HTTP_STATUS[exc.code], exc.message, headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    names = {460: "Checksum Mismatch", 423: "Locked", 507: "Insufficient Storage"}
    name = names.get(status) or _reason(status)
    response = jsonify(error=name, status=status, message=message)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@api_bp.before_request
def _require_tus_version() -> Response | None:
    if request.method == "OPTIONS":
        return None
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        return _error(
            412,
            f"send Tus-Resumable: {TUS_VERSION}; it is the only version spoken here",
            {"Tus-Version": TUS_VERSION},
        )
    return None


@api_bp.after_request
def _tus_headers(response: Response) -> Response:
    response.headers["Tus-Resumable"] = TUS_VERSION
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _capabilities() -> dict[str, str]:
    return {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": EXTENSIONS,
        "Tus-Max-Size": str(current_app.config["TRANSFER_MAX_FILE_SIZE"]),
        "Tus-Checksum-Algorithm": ",".join(storage.CHECKSUM_ALGORITHMS),
    }


@api_bp.route("/uploads", methods=["OPTIONS"], provide_automatic_options=False)
@api_bp.route("/uploads/<upload_id>", methods=["OPTIONS"], provide_automatic_options=False)
def options(upload_id: str | None = None) -> Response:
    return Response(status=204, headers=_capabilities())


# -- request parsing -------------------------------------------------------------


def _integer_header(name: str, required: bool = True) -> int | None:
    value = request.headers.get(name)
    if value is None:
        if required:
            raise BadRequest(f"the {name} header is required")
        return None
    if not _INTEGER.match(value.strip()):
        raise BadRequest(f"{name} must be a non-negative whole number, not {value!r}")
    return int(value)


def parse_metadata(header: str) -> dict[str, str]:
    """``key base64,key2 base64`` as the spec writes it; values must be UTF-8."""
    try:
        return tusmeta.decode(header)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _checksum() -> tuple[str, bytes] | None:
    header = request.headers.get("Upload-Checksum")
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in storage.CHECKSUM_ALGORITHMS:
        raise BadRequest(
            f"Upload-Checksum algorithm {algorithm!r} is not one of"
            f" {', '.join(storage.CHECKSUM_ALGORITHMS)}",
        )
    try:
        return algorithm, base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise BadRequest("Upload-Checksum's digest is not base64") from None


def _body_reader(limit: int) -> Callable[[memoryview], int]:
    """``readinto`` over the request body, however the server hands it to us.

    Flask's ``MAX_CONTENT_LENGTH`` (meant for forms) is replaced by *limit*: the
    bytes the upload still lacks, plus one, so :func:`storage.receive` can tell
    a body that runs past ``Upload-Length`` and refuse it.
    """
    request.max_content_length = limit
    stream: Any = request.stream
    if hasattr(stream, "readinto"):
        return stream.readinto

    def readinto(view: memoryview) -> int:
        data = stream.read(len(view))
        view[: len(data)] = data
        return len(data)

    return readinto


def _receive_body(
    upload: TransferFile, offset: int, headers: dict[str, str] | None = None
) -> TransferFile:
    """Receive a request's body at *offset*; *headers* go on this function's own refusals."""
    try:
        checksum = _chunk_checks(upload, offset)
    except TransferError as exc:
        exc.headers.update(headers or {})
        raise
    try:
        reader = _body_reader(upload.size - offset + 1)
        return storage.receive(upload, offset, reader, checksum=checksum)
    except (OSError, HTTPException, ValueError) as exc:
        # The client went away mid-chunk; what arrived is kept (unless a checksum
        # made it unverifiable) and HEAD tells the client where to resume.
        current_app.logger.info("upload %s interrupted: %s", upload.id, exc)
        current = models.get(upload.id)
        raise BadRequest(
            "the request body ended early", {**(headers or {}), **_offset_headers(current)}
        ) from exc


def _chunk_checks(upload: TransferFile, offset: int) -> tuple[str, bytes] | None:
    """Refuse a chunk by its headers; returns its Upload-Checksum (algorithm, digest), if any."""
    if request.mimetype != OFFSET_CONTENT_TYPE:
        raise UnsupportedMediaType(f"a chunk's Content-Type must be {OFFSET_CONTENT_TYPE}")
    length = request.content_length
    if length is not None and offset + length > upload.size:
        raise UploadTooLong(
            f"{length} bytes at offset {offset} run past the upload's length ({upload.size})"
        )
    return _checksum()


def _own_upload(upload_id: str) -> TransferFile:
    upload = models.get(upload_id, owner_id=g.user.id)
    if upload is None:
        raise UploadGone("no such upload")
    upload = storage.settle(upload)
    if upload.expired():
        raise UploadExpired("this upload has expired; start again")
    return upload


def _offset_headers(upload: TransferFile | None) -> dict[str, str]:
    if upload is None:
        return {}
    headers = {"Upload-Offset": str(upload.received)}
    if upload.expires_at is not None and not upload.complete:
        headers["Upload-Expires"] = format_datetime(_aware(upload.expires_at), usegmt=True)
    return headers


def _aware(value: Any) -> Any:
    return value.replace(tzinfo=UTC)


# -- the protocol ------------------------------------------------------------------


@api_bp.post("/uploads")
@login_required
def create() -> Response:
    """Creation (and creation-with-upload when the request has a body)."""
    if "Upload-Defer-Length" in request.headers:
        raise BadRequest("Upload-Defer-Length is not supported: send Upload-Length")
    size = _integer_header("Upload-Length")
    assert size is not None
    metadata_header = request.headers.get("Upload-Metadata", "")
    metadata = parse_metadata(metadata_header)
    expected = metadata.get("sha256", "").lower() or None
    if expected is not None and not SHA256_HEX.match(expected):
        raise BadRequest("the sha256 metadata must be 64 hex digits")
    upload = storage.start_upload(
        g.user.id,
        filename=clean_filename(metadata.get("filename") or metadata.get("name") or ""),
        size=size,
        content_type=_content_type(metadata.get("filetype") or metadata.get("type")),
        metadata=metadata_header,
        expected_sha256=expected,
    )
    location = url_for(".upload", upload_id=upload.id, _external=True)
    if (request.content_length or request.headers.get("Transfer-Encoding")) and size:
        # The upload exists even if its first chunk is refused: a refusal says where.
        upload = _receive_body(upload, 0, {"Location": location})
    elif size == 0:
        upload = storage.receive(upload, 0, lambda view: 0)
    response = Response(status=201, headers={"Location": location, **_offset_headers(upload)})
    return response


def _content_type(value: str | None) -> str:
    value = (value or "").strip()
    if re.match(r"^[\w.+-]+/[\w.+-]+$", value) and len(value) <= 255:
        return value.lower()
    return "application/octet-stream"


@api_bp.get("/uploads/<upload_id>")
@login_required
def upload(upload_id: str) -> Response:
    """Where an upload stands (HEAD; GET answers the same headers, with no body)."""
    found = _own_upload(upload_id)
    headers = {"Upload-Length": str(found.size), **_offset_headers(found)}
    if found.metadata:
        headers["Upload-Metadata"] = found.metadata
    return Response(status=200, headers=headers)


@api_bp.patch("/uploads/<upload_id>")
@login_required
def patch(upload_id: str) -> Response:
    found = _own_upload(upload_id)
    offset = _integer_header("Upload-Offset")
    assert offset is not None
    if found.complete or found.received != offset:
        raise OffsetMismatch(found.received, offset)
    updated = _receive_body(found, offset)
    return Response(status=204, headers=_offset_headers(updated))


@api_bp.delete("/uploads/<upload_id>")
@login_required
def terminate(upload_id: str) -> Response:
    """Termination: the upload (or the file it became) and its bytes are deleted."""
    found = models.get(upload_id, owner_id=g.user.id)
    if found is None:
        raise UploadGone("no such upload")
    storage.remove(found)
    return Response(status=204)
