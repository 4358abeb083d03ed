"""Error responses: a friendly page for people, a JSON body for API clients.

An outage of the database or Redis surfaces as 503 "temporarily unavailable"
with ``Retry-After`` rather than a bare 500, because the right reaction (retry
later) differs, and it is logged as one line (:mod:`project.outages`).
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable
from werkzeug.wrappers import Response as WerkzeugResponse

from project.outages import OUTAGES, RETRY_AFTER, is_outage, log_outage

MESSAGES = {
    400: "The request could not be understood.",
    401: "You need to log in to see this.",
    403: "You do not have permission to see this.",
    404: "There is nothing at this address.",
    405: "This address does not accept that method.",
    413: "The request is larger than this server accepts.",
    429: "Too many requests; please wait a moment and try again.",
    500: "Something went wrong on our side. It has been logged.",
    503: "The service is temporarily unavailable. Please try again shortly.",
}


def wants_json() -> bool:
    """API paths and clients that ask for JSON get JSON errors."""
    if request.path.startswith("/api/"):
        return True
    accept = request.accept_mimetypes
    return accept["application/json"] > accept["text/html"]


ErrorResponse = tuple[Response | str, int, list[tuple[str, str]]]


def error_response(code: int, message: str, name: str) -> ErrorResponse:
    if wants_json():
        return jsonify(error=name, status=code, message=message), code, []
    page = render_template("errors/error.html", code=code, name=name, message=message)
    return page, code, []


def handle_http_exception(exc: HTTPException) -> ErrorResponse | HTTPException:
    if exc.code is None or exc.code < 400:
        return exc  # redirects and the like pass through
    if exc.response is not None:
        return exc  # the raiser built the response (e.g. a throttled login form)
    message = MESSAGES.get(exc.code, exc.description or "")
    if exc.description and exc.description != type(exc).description:
        message = exc.description  # a specific reason given by the view
    body, code, _ = error_response(exc.code, message, exc.name)
    # Keep headers such as Allow (405) and Retry-After (429, 503).
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    return body, code, headers


def handle_csrf_error(exc: CSRFError) -> ErrorResponse:
    message = f"{exc.description} Reload the page and try again."
    return error_response(400, message, "CSRF check failed")


def outage_response() -> ErrorResponse:
    """503 with Retry-After: a service this request needs is down; the client should retry."""
    body, code, _ = error_response(503, MESSAGES[503], ServiceUnavailable().name)
    return body, code, [("Retry-After", str(RETRY_AFTER))]


def handle_outage(exc: Exception) -> ErrorResponse:
    log_outage(exc, f"serving {request.method} {request.path}")
    return outage_response()


def handle_internal_error(exc: InternalServerError) -> ErrorResponse:
    if exc.original_exception is not None and is_outage(exc.original_exception):
        return outage_response()  # Flask has logged it already
    return error_response(500, MESSAGES[500], exc.name)


def replace_with_outage(response: WerkzeugResponse) -> None:
    """Turn an already-built response into the 503 answer, in place.

    For a failure after the view has run (saving the session): what the view
    promised (a redirect after login, a page that says "saved") did not happen.
    Headers every response carries (security headers) stay; what described the
    view's body goes.
    """
    outage = make_response(outage_response())
    response.close()  # a file being sent, say
    response.set_data(outage.get_data())
    response.status_code = outage.status_code
    for header in ("Location", "Content-Disposition", "Content-Range", "Accept-Ranges", "ETag",
                   "Last-Modified", "Content-Encoding", "Set-Cookie"):  # fmt: skip
        response.headers.pop(header, None)
    response.direct_passthrough = False
    response.headers["Content-Type"] = outage.headers["Content-Type"]
    response.headers["Retry-After"] = outage.headers["Retry-After"]
    response.headers["Cache-Control"] = "no-store"


def init_errors(app: Flask) -> None:
    app.register_error_handler(CSRFError, handle_csrf_error)
    for outage in OUTAGES:  # before the view's own error becomes a 500
        app.register_error_handler(outage, handle_outage)
    app.register_error_handler(InternalServerError, handle_internal_error)
    app.register_error_handler(HTTPException, handle_http_exception)
