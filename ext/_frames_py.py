"""Pure-Python WebSocket masking, used when the Cython extension is not built.

Same signature and errors as ``ext/_frames.pyx``. It XORs the payload as one
big integer against the mask repeated to the same length, so the loop runs
inside CPython's C code over whole machine words instead of per byte.
"""

from __future__ import annotations

BytesLike = bytes | bytearray | memoryview


def apply_mask(data: BytesLike, mask: BytesLike) -> bytes:
    """XOR *data* with the 4-byte *mask* repeated (RFC 6455 section 5.3).

    Masking and unmasking are the same operation.

    Raises:
        TypeError: *data* or *mask* is not a bytes-like object.
        ValueError: *mask* is not exactly 4 bytes long.
    """
    try:
        view = memoryview(data)
        key = memoryview(mask)
    except TypeError:
        bad = mask if isinstance(data, (bytes, bytearray, memoryview)) else data
        raise TypeError(f"expected a bytes-like object, not {type(bad).__name__}") from None
    if key.nbytes != 4:
        raise ValueError("mask must contain 4 bytes")
    size = view.nbytes
    if size == 0:
        return b""
    key_bytes = key.tobytes()
    repeated = key_bytes * (size // 4 + 1)
    masked = int.from_bytes(view, "little") ^ int.from_bytes(repeated[:size], "little")
    return masked.to_bytes(size, "little")
