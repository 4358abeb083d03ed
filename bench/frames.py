"""WebSocket masking throughput: our Cython and pure-Python codecs beside their peers.

In one run, for payloads of 16 B, 125 B, 4 KiB, 64 KiB and 1 MiB: MB/s of
``apply_mask`` from ``ext._frames`` (Cython), ``ext._frames_py`` (pure Python),
``websockets.speedups.apply_mask`` (the `websockets` library's C), and the seed
tutorial's per-byte loop. Prints the table and the ratios the realtime issue
targets: Cython >= websockets at 64 KiB and 1 MiB and within 1.5x at 16 B; pure
Python >= 30x the seed loop at 64 KiB and 1 MiB.
"""

from __future__ import annotations

import argparse
import os
import timeit
from collections.abc import Callable

from ext import _frames_py

SIZES = [16, 125, 4096, 65536, 1 << 20]
Codec = Callable[[bytes, bytes], bytes]


def seed_apply_mask(data: bytes, mask: bytes) -> bytes:
    """The seed tutorial's loop: one XOR per byte in Python."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def codecs() -> dict[str, Codec | None]:
    found: dict[str, Codec | None] = {}
    try:
        from ext import _frames

        found["ours (Cython)"] = _frames.apply_mask
    except ImportError:
        found["ours (Cython)"] = None  # not built: no compiler at install time
    found["ours (pure Python)"] = _frames_py.apply_mask
    try:
        from websockets.speedups import apply_mask as websockets_apply_mask

        found["websockets.speedups"] = websockets_apply_mask
    except ImportError:
        found["websockets.speedups"] = None
    found["seed per-byte loop"] = seed_apply_mask
    return found


def throughput(codec: Codec, size: int, seconds: float) -> float:
    """MB/s: the best of 5 timings, each long enough to be measurable."""
    data, mask = os.urandom(size), os.urandom(4)
    number = 1
    while timeit.timeit(lambda: codec(data, mask), number=number) < seconds / 5:
        number *= 2
    best = min(timeit.repeat(lambda: codec(data, mask), number=number, repeat=5)) / number
    return size / best / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench frames", description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=0.2, help="rough time per measurement (default 0.2)"
    )
    args, _ = parser.parse_known_args(argv)
    results: dict[str, dict[int, float]] = {}
    for name, codec in codecs().items():
        if codec is None:
            continue
        results[name] = {size: throughput(codec, size, args.seconds) for size in SIZES}
    labels = ["16 B", "125 B", "4 KiB", "64 KiB", "1 MiB"]
    print("| codec (MB/s) | " + " | ".join(labels) + " |")
    print("| --- |" + " ---: |" * len(SIZES))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{row[s]:,.0f}" for s in SIZES) + " |")
    print()
    cython, ws = results.get("ours (Cython)"), results.get("websockets.speedups")
    python, seed = results["ours (pure Python)"], results["seed per-byte loop"]
    if cython and ws:
        print("| ratio | " + " | ".join(labels) + " |")
        print("| --- |" + " ---: |" * len(SIZES))
        print(
            "| Cython / websockets | "
            + " | ".join(f"{cython[s] / ws[s]:.2f}x" for s in SIZES)
            + " |"
        )
    print(
        "| pure Python / seed loop | "
        + " | ".join(f"{python[s] / seed[s]:.1f}x" for s in SIZES)
        + " |"
    )
    print()
    print(
        "Targets: Cython/websockets >= 1.0 at 64 KiB and 1 MiB, >= 0.67 at 16 B; "
        "pure Python/seed >= 30 at 64 KiB and 1 MiB."
    )
    return 0
