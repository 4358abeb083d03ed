"""The masking codec: compiled and pure-Python agree with the RFC's definition."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ext import frames
from tests.ext.conftest import COMPILED, reference

ROOT = Path(__file__).resolve().parents[2]
REQUIRE_COMPILED = os.environ.get("FRAMES_BUILD") == "required"


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 125, 126, 4096, 65537])
def test_apply_mask_matches_the_reference(apply_mask, size: int) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(size)
    mask = os.urandom(4)
    assert apply_mask(data, mask) == reference(data, mask)
    assert apply_mask(apply_mask(data, mask), mask) == data  # masking twice restores


def test_large_payloads_and_any_alignment(apply_mask) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(1 << 20)
    mask = b"\x01\x02\x03\x04"
    for offset in range(4):
        view = memoryview(data)[offset : offset + 100_003]
        assert apply_mask(view, mask) == reference(bytes(view), mask)


def test_accepts_every_bytes_like_type(apply_mask) -> None:  # type: ignore[no-untyped-def]
    expected = reference(b"hello", b"abcd")
    for data in (b"hello", bytearray(b"hello"), memoryview(b"hello")):
        result = apply_mask(data, bytearray(b"abcd"))
        assert result == expected and type(result) is bytes


@pytest.mark.parametrize(
    ("data", "mask", "error", "message"),
    [
        (b"x", b"abc", ValueError, "mask must contain 4 bytes"),
        (b"x", b"abcde", ValueError, "mask must contain 4 bytes"),
        (5, b"abcd", TypeError, "expected a bytes-like object, not int"),
        ("text", b"abcd", TypeError, "expected a bytes-like object, not str"),
        (b"x", None, TypeError, "expected a bytes-like object, not NoneType"),
    ],
)
def test_both_codecs_raise_the_same_errors(apply_mask, data, mask, error, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        apply_mask(data, mask)


def test_the_compiled_codec_is_picked_when_built() -> None:
    if not COMPILED and not REQUIRE_COMPILED:
        assert frames.BACKEND == "python"
        return
    assert COMPILED, "FRAMES_BUILD=required but ext._frames was not built"
    if os.environ.get("FRAMES_PURE_PYTHON", "") in ("", "0"):
        assert frames.BACKEND == "cython"


def test_frames_pure_python_forces_the_fallback() -> None:
    code = "from ext import frames; print(frames.BACKEND, frames.apply_mask.__module__)"
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "FRAMES_PURE_PYTHON": "1"},
        check=True,
    )
    assert run.stdout.split() == ["python", "ext._frames_py"]


def test_a_strided_view_is_masked_like_its_bytes(apply_mask) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(101)
    strided = memoryview(data)[::3]
    assert apply_mask(strided, b"wxyz") == reference(bytes(strided), b"wxyz")
