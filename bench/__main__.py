"""Run benchmarks: ``python -m bench [NAME ...] [OPTIONS]``.

With no NAME every benchmark in :data:`bench.BENCHMARKS` runs; the ones in
:data:`bench.ON_DEMAND` (the soak, 10+ minutes) run only when named. OPTIONS are
passed to each selected benchmark (see ``python -m bench db_pool --help``).
A benchmark is imported only when it runs, so one with a missing dependency
does not stop the others from being listed.
"""

from __future__ import annotations

import importlib
import sys

from bench import BENCHMARKS, ON_DEMAND

USAGE = (
    f"usage: python -m bench [NAME ...] [OPTIONS]   (NAME: {', '.join(BENCHMARKS)}; "
    f"only when named: {', '.join(ON_DEMAND)})"
)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        print("OPTIONS go to each benchmark; `python -m bench NAME --help` lists them.")
        return 0
    names: list[str] = []
    while args and not args[0].startswith("-"):
        name = args.pop(0)
        if name not in BENCHMARKS + ON_DEMAND:
            print(f"unknown benchmark {name!r}\n{USAGE}", file=sys.stderr)
            return 2
        names.append(name)

    status = 0
    for name in names or BENCHMARKS:
        print(f"## {name}\n", flush=True)
        module = importlib.import_module(f"bench.{name}")
        status = max(status, module.main(args))
        print(flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
