"""The opening handshake (RFC 6455 section 4.2): which upgrade requests are accepted, and how.

A refused request is answered with the status and headers the RFC asks for, so
a client (or a person with curl) can tell what to fix; a cross-site page can
never open a socket that carries this site's cookies.
"""

from __future__ import annotations

import base64

import pytest

from project.websocket.deflate import PerMessageDeflate
from project.websocket.exceptions import HandshakeError
from project.websocket.handshake import Handshake, accept_key, validate

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # section 1.3
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

_DROP = object()


def request_headers(**changes: object) -> dict[str, str]:
    """A browser's valid upgrade request, lower-cased names; ``name=_DROP`` removes one."""
    headers = {
        "host": "example.com",
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": RFC_KEY,
        "sec-websocket-version": "13",
        "origin": "http://example.com",
    }
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is _DROP:
            headers.pop(name, None)
        else:
            headers[name] = str(value)
    return headers


def handshake(
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    protocol: str = "HTTP/1.1",
    host: str = "example.com",
    scheme: str = "http",
    **options: object,
) -> Handshake:
    return validate(
        method,
        protocol,
        request_headers() if headers is None else headers,
        host=host,
        scheme=scheme,
        **options,  # type: ignore[arg-type]
    )


def refused(headers: dict[str, str] | None = None, **kwargs: object) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        handshake(headers, **kwargs)  # type: ignore[arg-type]
    return info.value


# -- a valid handshake -----------------------------------------------------------------------


def test_the_accept_key_is_the_one_from_the_rfc_example() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_a_valid_handshake_answers_101_with_the_accept_key() -> None:
    result = handshake()
    assert ("Sec-WebSocket-Accept", RFC_ACCEPT) in result.headers
    assert result.response() == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    )
    assert result.subprotocol is None and result.deflate is None


@pytest.mark.parametrize(
    ("upgrade", "connection"),
    [
        ("WebSocket", "Upgrade"),
        ("websocket", "keep-alive, Upgrade"),
        ("WEBSOCKET", "upgrade"),
        ("websocket", "Upgrade,keep-alive"),
        ("h2c, websocket", "keep-alive ,  UPGRADE"),
    ],
)
def test_upgrade_and_connection_tokens_match_case_insensitively(
    upgrade: str, connection: str
) -> None:
    result = handshake(request_headers(upgrade=upgrade, connection=connection))
    assert ("Sec-WebSocket-Accept", RFC_ACCEPT) in result.headers


def test_a_key_with_surrounding_whitespace_is_accepted() -> None:
    result = handshake(request_headers(sec_websocket_key=f"  {RFC_KEY} "))
    assert ("Sec-WebSocket-Accept", RFC_ACCEPT) in result.headers


# -- refused requests ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "HEAD", "get"])
def test_a_request_that_is_not_get_is_refused_with_405(method: str) -> None:
    error = refused(method=method)
    assert error.status == 405
    assert error.headers.get("Allow") == "GET"


@pytest.mark.parametrize("protocol", ["HTTP/1.0", "HTTP/0.9"])
def test_a_request_older_than_http_1_1_is_refused_with_400(protocol: str) -> None:
    assert refused(protocol=protocol).status == 400


@pytest.mark.parametrize("upgrade", [_DROP, "", "h2c", "websockets"])
def test_a_request_without_upgrade_websocket_is_refused_with_426(upgrade: object) -> None:
    error = refused(request_headers(upgrade=upgrade))
    assert error.status == 426
    assert error.headers.get("Upgrade") == "websocket"


@pytest.mark.parametrize("connection", [_DROP, "", "keep-alive", "close", "upgrades"])
def test_a_connection_header_without_upgrade_is_refused_with_400(connection: object) -> None:
    assert refused(request_headers(connection=connection)).status == 400


@pytest.mark.parametrize("version", [_DROP, "8", "7", "12", "14", ""])
def test_a_version_other_than_13_is_refused_with_426_naming_13(version: object) -> None:
    error = refused(request_headers(sec_websocket_version=version))
    assert error.status == 426
    assert error.headers.get("Sec-WebSocket-Version") == "13"


@pytest.mark.parametrize(
    "key",
    [
        base64.b64encode(bytes(15)).decode(),
        base64.b64encode(bytes(17)).decode(),
        base64.b64encode(bytes(32)).decode(),
        "not base64 at all!!!!!==",
        "dGhlIHNhbXBsZSBub25jZQ",  # the padding left off
        "dGhlIHNhbXBsZSBub25jZQ==!",
        "",
        "é" * 24,
    ],
    ids=[
        "15-bytes",
        "17-bytes",
        "32-bytes",
        "not-base64",
        "unpadded",
        "trailing",
        "empty",
        "latin1",
    ],
)
def test_a_key_that_is_not_base64_of_16_bytes_is_refused_with_400(key: str) -> None:
    assert refused(request_headers(sec_websocket_key=key)).status == 400


def test_a_missing_key_is_refused_with_400() -> None:
    assert refused(request_headers(sec_websocket_key=_DROP)).status == 400


# -- Origin: no cross-site WebSocket hijacking -----------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://example.com", "example.com", "http"),
        ("https://example.com", "example.com", "https"),
        ("HTTP://Example.COM", "example.com", "http"),
        ("http://example.com:8080", "example.com:8080", "http"),
        ("http://example.com", "example.com", "ws"),  # a ws:// URL on an http page
        ("https://example.com", "example.com", "wss"),
    ],
)
def test_the_same_origin_is_accepted(origin: str, host: str, scheme: str) -> None:
    handshake(request_headers(origin=origin), host=host, scheme=scheme)


@pytest.mark.parametrize(
    ("origin", "scheme"),
    [
        ("http://evil.example", "http"),
        ("http://example.com.evil.example", "http"),
        ("http://evil.example/example.com", "http"),
        ("http://sub.example.com", "http"),
        ("http://example.com:8080", "http"),
        ("http://example.com", "https"),  # an http page may not open the https site's socket
        ("https://example.com", "http"),
        ("null", "http"),
        ("http://example.com/path", "http"),
        ("http://user@example.com", "http"),
        ("", "http"),
    ],
)
def test_another_origin_is_refused_with_403(origin: str, scheme: str) -> None:
    error = refused(request_headers(origin=origin), host="example.com", scheme=scheme)
    assert error.status == 403


@pytest.mark.parametrize("origin", ["https://app.example.org", "https://APP.example.org/"])
def test_an_origin_listed_in_allowed_origins_is_accepted(origin: str) -> None:
    handshake(request_headers(origin=origin), allowed_origins=["https://app.example.org"])


def test_allowed_origins_do_not_open_the_door_to_others() -> None:
    headers = request_headers(origin="https://other.example.org")
    error = refused(headers, allowed_origins=["https://app.example.org"])
    assert error.status == 403


def test_a_request_without_origin_from_a_non_browser_client_is_accepted() -> None:
    handshake(request_headers(origin=_DROP))


# -- subprotocols ----------------------------------------------------------------------------


def test_the_first_offered_subprotocol_that_is_supported_is_chosen() -> None:
    headers = request_headers(sec_websocket_protocol="mqtt, chat.v2, chat.v1")
    result = handshake(headers, subprotocols=["chat.v1", "chat.v2"])
    assert result.subprotocol == "chat.v2"
    assert ("Sec-WebSocket-Protocol", "chat.v2") in result.headers
    assert b"\r\nSec-WebSocket-Protocol: chat.v2\r\n" in result.response()


def test_no_subprotocol_header_when_none_offered_is_supported() -> None:
    headers = request_headers(sec_websocket_protocol="mqtt, soap")
    result = handshake(headers, subprotocols=["chat.v1"])
    assert result.subprotocol is None
    assert all(name != "Sec-WebSocket-Protocol" for name, _ in result.headers)


def test_no_subprotocol_header_when_the_client_offers_none() -> None:
    result = handshake(subprotocols=["chat.v1"])
    assert result.subprotocol is None
    assert b"Sec-WebSocket-Protocol" not in result.response()


# -- compression -----------------------------------------------------------------------------

OFFER = "permessage-deflate; client_max_window_bits"


def test_a_compression_offer_is_accepted_when_compression_is_on() -> None:
    result = handshake(request_headers(sec_websocket_extensions=OFFER), compression=True)
    assert isinstance(result.deflate, PerMessageDeflate)
    assert ("Sec-WebSocket-Extensions", "permessage-deflate") in result.headers


def test_a_compression_offer_is_ignored_when_compression_is_off() -> None:
    result = handshake(request_headers(sec_websocket_extensions=OFFER))
    assert result.deflate is None
    assert b"Sec-WebSocket-Extensions" not in result.response()


def test_an_unknown_extension_gets_no_extensions_header() -> None:
    headers = request_headers(sec_websocket_extensions="x-webkit-deflate-frame")
    result = handshake(headers, compression=True)
    assert result.deflate is None
    assert b"Sec-WebSocket-Extensions" not in result.response()


def test_the_response_carries_the_agreed_compression_parameters() -> None:
    offer = "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
    result = handshake(request_headers(sec_websocket_extensions=offer), compression=True)
    assert result.deflate is not None
    assert result.deflate.server_no_context_takeover
    assert result.deflate.server_max_window_bits == 10
    assert (
        "Sec-WebSocket-Extensions",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
    ) in result.headers


def test_an_unreadable_compression_offer_is_declined_not_an_error() -> None:
    # Header values reach WSGI decoded as latin-1; "²" is a digit to str.isdigit().
    offer = "permessage-deflate; server_max_window_bits=\xb2"
    result = handshake(request_headers(sec_websocket_extensions=offer), compression=True)
    assert result.deflate is None
    assert b"Sec-WebSocket-Extensions" not in result.response()
