"""Error responses: a friendly page for people, a JSON body for API clients.

An outage of the database or Redis surfaces as 503 "temporarily unavailable"
rather than a bare 500, because the right reaction (retry later) differs.
"""

from __future__ import annotations

import redis
from flask import Flask, Response, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from project.db import OperationalError

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

#: Failures of a backing service rather than of our code.
OUTAGES = (OperationalError, redis.ConnectionError, redis.TimeoutError)


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


def handle_internal_error(exc: InternalServerError) -> ErrorResponse:
    if isinstance(exc.original_exception, OUTAGES):
        return error_response(503, MESSAGES[503], ServiceUnavailable().name)
    return error_response(500, MESSAGES[500], exc.name)


def init_errors(app: Flask) -> None:
    app.register_error_handler(CSRFError, handle_csrf_error)
    app.register_error_handler(InternalServerError, handle_internal_error)
    app.register_error_handler(HTTPException, handle_http_exception)
