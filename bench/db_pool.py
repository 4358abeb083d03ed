"""How much the connection pool buys: req/s of a one-row page, pooled versus a fresh connection.

One gunicorn, started with the production settings (``-c gunicorn.conf.py``)
and :mod:`bench.db_pool_app`, serves both variants, so workers, threads and
every hook are the same for both:

* ``/bench/pooled`` reads the row with ``db.fetch_one`` (DBUtils pool);
* ``/bench/fresh`` opens a ``pymysql.connect(...)`` per request and closes it.

Each variant gets a warm-up (which also fills the pool) and then a timed run
at a fixed number of keep-alive connections. The load comes from ``wrk`` when
it is installed (on Debian as root it is installed with apt-get, with a
message, unless ``--no-install``), else from a Python generator of threads
over ``http.client``; that one is slower and shares the GIL, so its figures
are a floor, and it says so.

The benchmark creates its own database, ``bench_pool_<random>``, on the
server of ``--mysql-url``, and drops it at the end; gunicorn is stopped at
the end too, also on an error or Ctrl-C. Database, gunicorn, load and report
helpers live in :mod:`bench._harness`, shared with the other benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._harness import (
    BenchDatabase,
    LoadGenerator,
    LoadResult,
    add_common_arguments,
    bench_database,
    check_common_arguments,
    choose_wrk,
    describe_gunicorn,
    free_port,
    get,
    gunicorn_env,
    gunicorn_server,
    gunicorn_settings,
    load_notes,
    ratio,
    results_table,
    run_main,
)
from bench.db_pool_app import ROW_ID, TABLE
from project.settings import ConfigurationError, load_settings

APP = "bench.db_pool_app:build_app()"
VARIANTS = (
    ("pooled", "/bench/pooled", "pooled: `db.fetch_one`"),
    ("fresh", "/bench/fresh", "fresh: `pymysql.connect(**mysql_connect_args(url))` per request"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench db_pool",
        description="req/s of a one-row page: our pool versus a fresh PyMySQL connection.",
    )
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    check_common_arguments(parser, args)
    return args


def create_row_table(database: BenchDatabase) -> None:
    """The one-row table both routes read."""
    with contextlib.closing(database.connect()) as con, con.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {TABLE} (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL,"
            " value INT NOT NULL) ENGINE=InnoDB"
        )
        cursor.execute(
            f"INSERT INTO {TABLE} (id, name, value) VALUES (%s, %s, %s)",
            (ROW_ID, "benchmark row", 42),
        )


def server_env(
    args: argparse.Namespace, database_url: str, port: int, instance: Path
) -> dict[str, str]:
    """gunicorn's environment: production settings with a random key, on the bench database.

    REDIS_URL is dropped so that both variants run on the same, known stack
    (with no session cookie, neither touches the session store anyway).
    """
    base = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    base.update(
        APP_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        DATABASE_URL=database_url,
        BENCH_INSTANCE_PATH=str(instance),
    )
    return gunicorn_env(base, port, args.workers, args.threads)


def format_report(
    results: dict[str, LoadResult],
    settings: dict[str, Any],
    pool_size: int,
    args: argparse.Namespace,
    tool: str,
    server_version: str,
) -> str:
    """The markdown table, its settings line and the pooled/fresh ratio."""
    lines = [
        f"{describe_gunicorn(settings)}, DB_POOL_SIZE={pool_size}; "
        f"load: {tool}, {args.connections} connections, {args.duration} s per variant "
        f"after {args.warmup} s warm-up; server {server_version}; "
        f"{os.cpu_count()} cores",
        "",
        *results_table([(label, results[key]) for key, _, label in VARIANTS]),
        "",
        f"ratio pooled/fresh (req/s): **{ratio(results['pooled'], results['fresh'])}**",
        *load_notes(tool, list(results.values())),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, wrk: str | None) -> dict[str, LoadResult]:
    """Set up database and gunicorn, load each variant, tear down; print the report."""
    results: dict[str, LoadResult] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench_db_pool_") as tmp,
        bench_database(args.mysql_url, "bench_pool_") as database,
    ):
        create_row_table(database)
        tmpdir = Path(tmp)
        port = free_port()
        env = server_env(args, database.app_url, port, tmpdir / "instance")
        try:  # the check gunicorn.conf.py's on_starting makes, but with our message
            pool_size = load_settings(environ=env)["DB_POOL_SIZE"]
        except ConfigurationError as exc:
            raise RuntimeError(f"settings: {exc}") from None
        settings = gunicorn_settings(env)
        loader = LoadGenerator(wrk, tmpdir, args.connections)

        with gunicorn_server(APP, env, port, tmpdir / "gunicorn.log", VARIANTS[0][1]):
            answers = {get(port, path) for _, path, _ in VARIANTS}
            if len(answers) != 1 or next(iter(answers))[0] != 200:
                raise RuntimeError(f"the variants do not give the same 200 answer: {answers}")
            for key, path, _ in VARIANTS:
                results[key] = loader.measure(key, port, path, args.warmup, args.duration)

        version = database.server_version
        print(format_report(results, settings, pool_size, args, loader.tool, version))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        results = run(args, choose_wrk(args))
        return 1 if any(r.errors for r in results.values()) else 0

    return run_main("db_pool", body)


if __name__ == "__main__":
    sys.exit(main())
