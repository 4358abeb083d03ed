"""Benchmarks: ``python -m bench`` runs them all, ``python -m bench NAME`` runs one.

Each benchmark is a module of this package with a ``main(argv) -> int`` that
prints a markdown table; :data:`BENCHMARKS` lists them in the order they run.
They are not part of the test suite: they take seconds to minutes, need the
MariaDB server, and their figures depend on the machine.
"""

from __future__ import annotations

#: Benchmark modules (``bench.<name>``), in the order ``python -m bench`` runs them.
BENCHMARKS: tuple[str, ...] = ("db_pool", "accounts", "frames", "echo", "fanout", "transfer")

#: Benchmarks that run only when named (``python -m bench soak``): they take many minutes.
ON_DEMAND: tuple[str, ...] = ("soak",)
