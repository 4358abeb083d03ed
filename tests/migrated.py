"""Migrated test databases, copied from a schema migrated once per test run.

Applying the migrations through yoyo takes about 0.65 s on MariaDB (yoyo's lock
table, one transaction and log row per migration, DDL that fsyncs), and the
stack fixture gives hundreds of tests a database of their own. So each engine
is migrated once, by the real ``migrate``, into a template; a test's database is
then a copy of it: on MariaDB the template's ``SHOW CREATE TABLE`` statements and
rows (yoyo's bookkeeping included, so the copy reads as migrated), about 25 ms;
on SQLite the template file, copied.

A copy counts as migrated for an app only while the app collects the same
migrations the template was built from; ``is_migrated`` checks that, so a test
that installs other apps still migrates for real.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask

from project import create_app
from project import migrations as project_migrations
from project.extensions import db


@dataclass
class MysqlSchema:
    """What a migrated MariaDB database holds: its tables' DDL and their rows."""

    creates: list[str]
    rows: dict[str, list[tuple[Any, ...]]]


@dataclass
class Templates:
    """The migrated schema of each engine, built on first use, for one test run."""

    workdir: Path
    migration_ids: list[str] = field(default_factory=list)
    copies: set[str] = field(default_factory=set)  # database URLs that are copies
    _mysql: MysqlSchema | None = None
    _sqlite: Path | None = None

    def _migrate(self, database_url: str) -> None:
        app = create_app(
            "test",
            overrides={
                "DATABASE_URL": database_url,
                "REDIS_URL": None,
                "INSTANCE_PATH": str(self.workdir / "instance"),
                "MEDIA_ROOT": str(self.workdir / "media"),
            },
            environ={},
        )
        project_migrations.migrate(app)
        self.migration_ids = [m.id for m in project_migrations.collect(app)]
        db.close()

    def copy_sqlite(self, target: Path) -> str:
        """Write a migrated SQLite database to *target*; returns its URL."""
        if self._sqlite is None:
            path = self.workdir / "template.db"
            self._migrate(f"sqlite:///{path}")
            self._sqlite = path
        shutil.copyfile(self._sqlite, target)
        url = f"sqlite:///{target}"
        self.copies.add(url)
        return url

    def fill_mysql(self, url: str) -> None:
        """Give the empty MariaDB database at *url* the migrated schema and yoyo's records."""
        from tests.conftest import mysql_admin

        schema = self._mysql_schema()
        name = url.rsplit("/", 1)[1]
        with mysql_admin() as admin, admin.cursor() as cur:
            cur.execute(f"USE `{name}`")
            cur.execute("SET FOREIGN_KEY_CHECKS=0")  # tables come in any order
            for create in schema.creates:
                cur.execute(create)
            cur.execute("SET FOREIGN_KEY_CHECKS=1")
            for table, rows in schema.rows.items():
                marks = ", ".join(["%s"] * len(rows[0]))
                cur.executemany(f"INSERT INTO `{table}` VALUES ({marks})", rows)
        self.copies.add(url)

    def _mysql_schema(self) -> MysqlSchema:
        if self._mysql is not None:
            return self._mysql
        from tests.conftest import mysql_admin, new_mysql_database

        with new_mysql_database("test_template") as url, mysql_admin() as admin:
            self._migrate(url)
            name = url.rsplit("/", 1)[1]
            creates, rows = [], {}
            with admin.cursor() as cur:
                cur.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (name,),
                )
                for (table,) in cur.fetchall():
                    cur.execute(f"SHOW CREATE TABLE `{name}`.`{table}`")
                    creates.append(cur.fetchone()[1])
                    cur.execute(f"SELECT * FROM `{name}`.`{table}`")
                    found = cur.fetchall()
                    if found:
                        rows[table] = list(found)
        self._mysql = MysqlSchema(creates, rows)
        return self._mysql

    def is_migrated(self, app: Flask) -> bool:
        """Whether *app*'s database is a copy holding every migration the app collects."""
        return app.config["DATABASE_URL"] in self.copies and self.migration_ids == [
            m.id for m in project_migrations.collect(app)
        ]
