"""`pacs-bridge db`: the database schema."""

from __future__ import annotations

from rich.console import Console

from bridge.cli.common import ConfigOption, load


def db_upgrade(config: ConfigOption = None) -> None:
    """Create or migrate the research and vault schemas to the current version."""
    from bridge.wiring import database_for
    from storage import migrate

    settings = load(config)
    database = database_for(settings)
    try:
        migrate.upgrade(database)
    finally:
        database.dispose()
    Console().print(f"database schema at {migrate.head_revision('research')} (vault {migrate.head_revision('vault')})")
