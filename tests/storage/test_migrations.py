"""The alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import storage.models.annotations  # noqa: F401  (registers its tables in research_metadata)
import storage.models.cohorts  # noqa: F401  (registers its tables in research_metadata)
from storage import migrate
from storage.db import Database
from storage.models.research import research_metadata
from storage.models.vault import vault_metadata


def test_upgrade_matches_the_models_and_is_idempotent(database_url: str) -> None:
    database = Database(database_url)
    try:
        migrate.upgrade(database)
        migrate.upgrade(database)  # a second run changes nothing
        assert migrate.is_current(database)
        with database.research_engine.connect() as connection:
            for metadata, table in ((research_metadata, "alembic_version"), (vault_metadata, "alembic_version_vault")):
                context = MigrationContext.configure(
                    connection,
                    opts={
                        "version_table": table,
                        "include_name": lambda name, type_, _p, m=metadata: type_ != "table" or name in m.tables,
                    },
                )
                assert compare_metadata(context, metadata) == []
        tables = set(inspect(database.research_engine).get_table_names())
        assert {
            "project",
            "subject",
            "timepoint",
            "series",
            "instance",
            "auditevent",
            "quarantineitem",
            "vault_subject",
            "vault_uid",
            "vault_study",
            "schedulestate",
        } <= tables
    finally:
        database.dispose()


def test_vault_in_its_own_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'research.db'}", f"sqlite:///{tmp_path / 'vault.db'}")
    try:
        migrate.upgrade(database)
        research = set(inspect(database.research_engine).get_table_names())
        vault = set(inspect(database.vault_engine).get_table_names())
        assert "vault_uid" in vault and "vault_uid" not in research
        assert "instance" in research and "instance" not in vault
    finally:
        database.dispose()


def test_the_newest_revision_is_read_from_the_files_as_alembic_reads_it() -> None:
    for target in ("research", "vault"):
        assert migrate.head_of_files(target) == migrate.head_revision(target) is not None


def test_an_older_schema_is_migrated(database_url: str) -> None:
    """A database at an earlier revision is brought to the newest (the quick check must not skip it)."""
    from alembic import command

    database = Database(database_url)
    try:
        for target, engine, revision in (
            ("research", database.research_engine, "0001_research"),
            ("vault", database.vault_engine, "head"),
        ):
            config = migrate._config(target)  # type: ignore[arg-type]
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        assert not migrate.is_current(database)
        assert "schedulestate" not in inspect(database.research_engine).get_table_names()
        migrate.upgrade(database)
        assert migrate.is_current(database)
        assert "schedulestate" in inspect(database.research_engine).get_table_names()
    finally:
        database.dispose()
