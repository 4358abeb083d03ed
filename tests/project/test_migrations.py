"""Migrations: per-app SQL files, applied once, in order, on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from project import migrations
from project.extensions import db


def add_app_migrations(app: Flask, label: str, directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    migrations.register_migrations(app, label, directory)


def test_installed_apps_are_migrated_and_recorded(app: Flask) -> None:
    statuses = migrations.status(app)
    assert [s.id for s in statuses][:1] == ["accounts:0001_users"]
    assert all(s.applied for s in statuses)
    assert migrations.migrate(app) == []  # idempotent: a second run applies nothing
    with app.app_context():
        assert db.fetch_value("SELECT COUNT(*) FROM users") == 0


def test_new_migrations_apply_once_in_order_across_apps(app: Flask, tmp_path: Path) -> None:
    log = "INSERT INTO migration_log (name) VALUES ('{}');"
    add_app_migrations(
        app,
        "alpha",
        tmp_path / "alpha",
        {
            "0001_log.sql": "CREATE TABLE migration_log (name VARCHAR(50) NOT NULL);\n"
            + log.format("alpha:0001"),
            "0003_third.sql": log.format("alpha:0003"),
            "0002_second.sql": log.format("alpha:0002"),
        },
    )
    add_app_migrations(
        app,
        "beta",
        tmp_path / "beta",
        {
            "0001_first.sql": "-- depends: alpha:0002_second\n" + log.format("beta:0001"),
        },
    )
    applied = migrations.migrate(app)
    assert applied == ["alpha:0001_log", "alpha:0002_second", "alpha:0003_third", "beta:0001_first"]
    assert migrations.migrate(app) == []
    with app.app_context():
        names = [r["name"] for r in db.fetch_all("SELECT name FROM migration_log")]
    assert names == ["alpha:0001", "alpha:0002", "alpha:0003", "beta:0001"]


def test_the_file_for_the_configured_engine_is_used(app: Flask, tmp_path: Path) -> None:
    add_app_migrations(
        app,
        "gamma",
        tmp_path / "gamma",
        {
            "0001_kind.mysql.sql": "CREATE TABLE engine_kind (name VARCHAR(10)); "
            "INSERT INTO engine_kind VALUES ('mysql');",
            "0001_kind.sqlite.sql": "CREATE TABLE engine_kind (name VARCHAR(10)); "
            "INSERT INTO engine_kind VALUES ('sqlite');",
        },
    )
    assert migrations.migrate(app) == ["gamma:0001_kind"]
    with app.app_context():
        assert db.fetch_value("SELECT name FROM engine_kind") == app.config["DATABASE"].engine


def test_a_failing_migration_is_named_and_not_recorded(app: Flask, tmp_path: Path) -> None:
    add_app_migrations(
        app,
        "delta",
        tmp_path / "delta",
        {
            "0001_broken.sql": "CREATE TABLE nope (id INTEGER;",
        },
    )
    with pytest.raises(migrations.MigrationError, match="delta:0001_broken failed"):
        migrations.migrate(app)
    assert [s for s in migrations.status(app) if s.id == "delta:0001_broken"][0].applied is False


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"1_bad.sql": "SELECT 1;"}, "migration files are named"),
        ({"0001_x.sql": "SELECT 1;", "0001_x.sqlite.sql": "SELECT 1;"}, "both a generic"),
        ({"0001_only.postgres.sql": "SELECT 1;"}, "migration files are named"),
    ],
)
def test_misnamed_files_are_reported(app: Flask, tmp_path: Path, files: dict, message: str) -> None:
    add_app_migrations(app, "eps", tmp_path / "eps", files)
    with pytest.raises(migrations.MigrationError, match=message):
        migrations.migrate(app)


def test_a_missing_engine_variant_is_reported(app: Flask, tmp_path: Path) -> None:
    other = "mysql" if app.config["DATABASE"].engine == "sqlite" else "sqlite"
    add_app_migrations(app, "zeta", tmp_path / "zeta", {f"0001_x.{other}.sql": "SELECT 1;"})
    with pytest.raises(migrations.MigrationError, match="has no 0001_x"):
        migrations.migrate(app)
