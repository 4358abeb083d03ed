"""Schema migrations: plain SQL files per app, applied by yoyo-migrations.

Each installed app keeps ``migrations/NNNN_name.sql``. Where MySQL and SQLite
need different SQL (auto-increment keys, column types), the app ships
``NNNN_name.mysql.sql`` and ``NNNN_name.sqlite.sql`` instead and the file for
the configured engine is used; both are the same migration.

yoyo records applied migrations in its ``_yoyo_migration`` table, takes a
lock so two processes never migrate at once, and applies them in order.
Its ids are file names, which would collide between apps (every app has a
``0001_initial``), so ids here are ``app:NNNN_name``, and a migration may
depend on another app's with ``-- depends: accounts:0001_users``.
Within an app, files apply in number order; apps apply in INSTALLED_APPS order.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pymysql
from flask import Flask
from yoyo import get_backend
from yoyo.backends.base import DatabaseBackend
from yoyo.migrations import Migration, MigrationList

from project.db import OperationalError
from project.urls import DatabaseURL

DRIVER_ERRORS = (pymysql.err.MySQLError, sqlite3.Error)

MIGRATION_FILE = re.compile(
    r"^(?P<number>\d{4})_(?P<name>\w+?)(?:\.(?P<engine>mysql|sqlite))?\.sql$"
)


class MigrationError(Exception):
    """A migration file is misnamed or missing for this engine, or failed to apply."""


@dataclass(frozen=True)
class MigrationStatus:
    id: str
    applied: bool


def register_migrations(app: Flask, label: str, directory: Path) -> None:
    """Record an app's migrations directory; called from the app's ``init_app``."""
    app.extensions.setdefault("migration_dirs", []).append((label, Path(directory)))


def collect(app: Flask) -> MigrationList:
    """Every installed app's migrations for the configured engine, in apply order."""
    engine = app.config["DATABASE"].engine
    migrations = MigrationList()
    for label, directory in app.extensions.get("migration_dirs", []):
        for migration_id, path in _files_for_engine(label, directory, engine):
            migrations.append(Migration(migration_id, str(path), str(directory)))
    return migrations


def _files_for_engine(label: str, directory: Path, engine: str) -> list[tuple[str, Path]]:
    chosen: dict[str, dict[str | None, Path]] = {}
    for path in sorted(directory.glob("*.sql")):
        if path.name.endswith(".rollback.sql"):
            continue
        match = MIGRATION_FILE.match(path.name)
        if not match:
            raise MigrationError(
                f"{path}: migration files are named NNNN_name.sql or NNNN_name.<mysql|sqlite>.sql"
            )
        stem = f"{match['number']}_{match['name']}"
        chosen.setdefault(stem, {})[match["engine"]] = path
    result = []
    for stem in sorted(chosen):
        variants = chosen[stem]
        if None in variants and len(variants) > 1:
            raise MigrationError(
                f"{label}: {stem} has both a generic and an engine-specific file; keep one kind"
            )
        found = variants.get(engine) or variants.get(None)
        if found is None:
            raise MigrationError(f"{label}: {stem} has no {stem}.{engine}.sql for this engine")
        result.append((f"{label}:{stem}", found))
    return result


def _backend(url: DatabaseURL) -> DatabaseBackend:
    if url.engine == "sqlite":
        Path(url.path).parent.mkdir(parents=True, exist_ok=True)
    try:
        return get_backend(url.yoyo_url)
    except DRIVER_ERRORS as exc:
        raise OperationalError(f"DATABASE_URL: cannot connect to {url.display}: {exc}") from exc


def migrate(app: Flask) -> list[str]:
    """Apply the migrations not yet applied; return their ids (empty when up to date).

    Raises:
        OperationalError: the database cannot be reached.
        MigrationError: a file is misnamed, or a migration's SQL failed (it is not recorded).
    """
    migrations = collect(app)
    backend = _backend(app.config["DATABASE"])
    try:
        with backend.lock():
            pending = backend.to_apply(migrations)
            for migration in pending:
                try:
                    backend.apply_migrations(MigrationList([migration]))
                except DRIVER_ERRORS as exc:
                    raise MigrationError(f"{migration.id} failed: {exc}") from exc
            return [m.id for m in pending]
    finally:
        backend.connection.close()


def status(app: Flask) -> list[MigrationStatus]:
    """Every known migration, in apply order, with whether it has been applied."""
    migrations = collect(app)
    backend = _backend(app.config["DATABASE"])
    try:
        applied = backend.get_applied_migration_hashes()
    finally:
        backend.connection.close()
    return [MigrationStatus(m.id, m.hash in applied) for m in migrations]
