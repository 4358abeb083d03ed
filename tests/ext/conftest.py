"""The masking codecs as one fixture: every frames test runs on the compiled and the pure one."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import pytest

from ext import _frames_py

COMPILED = importlib.util.find_spec("ext._frames") is not None

ApplyMask = Callable[[object, object], bytes]


def reference(data: bytes, mask: bytes) -> bytes:
    """RFC 6455 section 5.3, byte by byte, as the seed tutorial writes it."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _codecs() -> list:  # type: ignore[type-arg]
    """Both codecs where the extension is built; a missing build fails test_frames."""
    params = [pytest.param(_frames_py.apply_mask, id="python")]
    if COMPILED:
        from ext import _frames

        params.append(pytest.param(_frames.apply_mask, id="cython"))
    return params


# Session scope: hypothesis refuses function-scoped fixtures under @given, and a codec is
# a plain function with nothing to reset between tests.
@pytest.fixture(scope="session", params=_codecs())
def apply_mask(request: pytest.FixtureRequest) -> ApplyMask:
    return request.param  # type: ignore[no-any-return]
