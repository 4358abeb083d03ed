"""The stack's errors form one tree, each with the code the protocol answers with."""

from __future__ import annotations

import pytest

from project.websocket import exceptions
from project.websocket.exceptions import (
    ConnectionClosed,
    DecompressionTooLarge,
    HandshakeError,
    ProtocolError,
    WebSocketError,
)

ERRORS = [
    HandshakeError(403, "this origin may not open a WebSocket here"),
    ProtocolError(1002, "client frames must be masked"),
    DecompressionTooLarge(),
    ConnectionClosed(1001),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_descends_from_one_base_and_carries_its_code(error: WebSocketError) -> None:
    assert isinstance(error, WebSocketError)
    assert (
        error.code
        == {
            HandshakeError: 403,
            ProtocolError: 1002,
            DecompressionTooLarge: 1009,
            ConnectionClosed: 1001,
        }[type(error)]
    )


def test_the_errors_are_siblings_so_catching_one_catches_no_other() -> None:
    kinds = [type(error) for error in ERRORS]
    for kind in kinds:
        assert [other for other in kinds if issubclass(other, kind)] == [kind]


def test_the_docstring_draws_every_error() -> None:
    for kind in (WebSocketError, *(type(error) for error in ERRORS)):
        assert kind.__name__ in (exceptions.__doc__ or "")


def test_a_handshake_error_keeps_its_status() -> None:
    error = HandshakeError(405, "a WebSocket handshake is a GET request", {"Allow": "GET"})
    assert (error.status, error.code, error.headers) == (405, 405, {"Allow": "GET"})
