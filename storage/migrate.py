"""Schema migrations (alembic) for the research database and the vault, run programmatically."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from storage.db import Database

Target = Literal["research", "vault"]
_HERE = Path(__file__).parent / "migrations"
_VERSION_TABLES = {"research": "alembic_version", "vault": "alembic_version_vault"}


def _config(target: Target) -> Config:
    config = Config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", str(_HERE))
    config.set_main_option("version_locations", str(_HERE / f"{target}_versions"))
    config.attributes["target"] = target
    return config


def head_revision(target: Target) -> str | None:
    return ScriptDirectory.from_config(_config(target)).get_current_head()


def current_revision(engine: Engine, target: Target) -> str | None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": _VERSION_TABLES[target]})
        return context.get_current_revision()


def upgrade(database: Database) -> None:
    """Bring both schemas to the newest revision; a no-op when they already are."""
    for target, engine in (("research", database.research_engine), ("vault", database.vault_engine)):
        config = _config(target)  # type: ignore[arg-type]
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")


def is_current(database: Database) -> bool:
    return all(
        current_revision(engine, target) == head_revision(target)  # type: ignore[arg-type]
        for target, engine in (("research", database.research_engine), ("vault", database.vault_engine))
    )
