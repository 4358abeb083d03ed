# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled WebSocket masking: the XOR runs on 8-byte words, without the GIL on large payloads.

Same signature and errors as ``ext/_frames_py.py``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

# Below this size, releasing and re-taking the GIL costs more than the XOR.
cdef Py_ssize_t NOGIL_THRESHOLD = 16384


cdef inline void _xor(const unsigned char* src, unsigned char* dst, Py_ssize_t n,
                      const unsigned char* key) noexcept nogil:
    cdef uint32_t k32
    cdef uint64_t k64, word
    cdef Py_ssize_t i = 0
    memcpy(&k32, key, 4)
    k64 = (<uint64_t>k32 << 32) | k32
    while i + 8 <= n:
        memcpy(&word, src + i, 8)
        word ^= k64
        memcpy(dst + i, &word, 8)
        i += 8
    while i < n:
        dst[i] = src[i] ^ key[i & 3]
        i += 1


def apply_mask(data, mask):
    """XOR *data* with the 4-byte *mask* repeated (RFC 6455 section 5.3).

    Raises:
        TypeError: *data* or *mask* is not a bytes-like object.
        ValueError: *mask* is not exactly 4 bytes long.
    """
    cdef const unsigned char[::1] src
    cdef const unsigned char[::1] key
    try:
        src = memoryview(data).cast("B")
        key = memoryview(mask).cast("B")
    except TypeError:
        bad = mask if isinstance(data, (bytes, bytearray, memoryview)) else data
        raise TypeError(f"expected a bytes-like object, not {type(bad).__name__}") from None
    if key.shape[0] != 4:
        raise ValueError("mask must contain 4 bytes")
    cdef Py_ssize_t n = src.shape[0]
    out = PyBytes_FromStringAndSize(NULL, n)
    if n == 0:
        return out
    cdef unsigned char* dst = <unsigned char*>PyBytes_AS_STRING(out)
    if n >= NOGIL_THRESHOLD:
        with nogil:
            _xor(&src[0], dst, n, &key[0])
    else:
        _xor(&src[0], dst, n, &key[0])
    return out
