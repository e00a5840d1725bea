"""Wiring: from validated settings to the objects the entry points use. Created once per process."""

from __future__ import annotations

import getpass
import logging
from dataclasses import dataclass

import pydicom.config

from bridge.ingest import IngestService
from bridge.keys import load_keys
from bridge.projects import build_projects
from bridge.quarantine import Quarantine
from bridge.settings import ConfigError, Settings
from storage import migrate
from storage.db import Database
from storage.filestore import FileStore, sweep_incoming
from storage.vault import VaultCipher

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    database: Database
    ingest: IngestService

    def close(self) -> None:
        self.database.dispose()


def database_for(settings: Settings) -> Database:
    """Engines for the configured research database and vault (not migrated)."""
    return Database(settings.database.url, settings.database.vault_url or None)


def open_database(settings: Settings) -> Database:
    """The database, migrated when `auto_migrate` is on; otherwise it must already be current."""
    database = database_for(settings)
    if settings.database.auto_migrate:
        migrate.upgrade(database)
    elif not migrate.is_current(database):
        raise ConfigError("the database schema is not current: run `pacs-bridge db upgrade`")
    return database


def quiet_pydicom() -> None:
    """pydicom logs offending values when it validates them: identified data must not reach the logs."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def prepare(settings: Settings) -> None:
    """Start-up work done once per service, before any worker starts: keys, schema, crash leftovers."""
    quiet_pydicom()
    load_keys(settings.security)
    open_database(settings).dispose()
    storage = settings.storage
    leftovers = sweep_incoming(storage.store_dir) + sweep_incoming(storage.quarantine_dir)
    if leftovers:
        logger.info("removed %d partial files left by an earlier crash", leftovers)


def open_ingest(settings: Settings, actor: str, database: Database | None = None) -> IngestService:
    """An ingest service with its own database engines unless given one (one per process)."""
    quiet_pydicom()
    keys = load_keys(settings.security)
    return IngestService(
        database=database or database_for(settings),
        store=FileStore(settings.storage.store_dir),
        quarantine=Quarantine(settings.storage.quarantine_dir),
        projects=build_projects(settings, keys),
        cipher=VaultCipher(keys.vault_key()),
        actor=actor,
    )


def open_runtime(settings: Settings, *, actor: str | None = None) -> Runtime:
    prepare(settings)
    database = database_for(settings)
    ingest = open_ingest(settings, actor or f"user:{getpass.getuser()}", database)
    return Runtime(settings=settings, database=database, ingest=ingest)
