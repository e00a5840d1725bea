"""Schema migrations (alembic) for the research database and the vault, run programmatically.

Every command starts by making sure the schemas are current. When they are (nearly always), that is
decided from the version tables and the revision files alone: alembic and its templates take ~0.12 s to
import, a tenth of a command's start-up, and are imported only when there is something to migrate.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Engine, inspect, text

from storage.db import Database

if TYPE_CHECKING:
    from alembic.config import Config

Target = Literal["research", "vault"]
_HERE = Path(__file__).parent / "migrations"
_VERSION_TABLES = {"research": "alembic_version", "vault": "alembic_version_vault"}


_REVISION = re.compile(r"^(down_revision|revision)\s*=\s*['\"]?([^'\"\n]*?)['\"]?\s*$", re.MULTILINE)


def _config(target: Target) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", str(_HERE))
    config.set_main_option("version_locations", str(_HERE / f"{target}_versions"))
    config.attributes["target"] = target
    return config


def head_revision(target: Target) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config(target)).get_current_head()


@cache
def head_of_files(target: Target) -> str | None:
    """The newest revision, read from the revision files (None unless they form a single line)."""
    revisions: dict[str, str | None] = {}
    for path in (_HERE / f"{target}_versions").glob("*.py"):
        found = dict((key, value) for key, value in _REVISION.findall(path.read_text(encoding="utf-8")))
        if "revision" in found:
            down = found.get("down_revision")
            revisions[found["revision"]] = None if down in (None, "None", "") else down
    heads = set(revisions) - set(revisions.values())
    return heads.pop() if len(heads) == 1 else None


def current_revision(engine: Engine, target: Target) -> str | None:
    """The revision recorded in the database (None for an empty database)."""
    table = _VERSION_TABLES[target]
    with engine.connect() as connection:
        if not inspect(connection).has_table(table):
            return None
        rows = connection.execute(text(f"SELECT version_num FROM {table}")).scalars().all()  # noqa: S608
    return rows[0] if len(rows) == 1 else None


def _targets(database: Database) -> tuple[tuple[Target, Engine], ...]:
    return (("research", database.research_engine), ("vault", database.vault_engine))


def upgrade(database: Database) -> None:
    """Bring both schemas to the newest revision; a no-op when they already are."""
    for target, engine in _targets(database):
        head = head_of_files(target)
        if head is not None and current_revision(engine, target) == head:
            continue
        from alembic import command

        config = _config(target)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")


def is_current(database: Database) -> bool:
    return all(
        current_revision(engine, target) == (head_of_files(target) or head_revision(target))
        for target, engine in _targets(database)
    )
