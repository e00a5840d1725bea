"""From validated settings to the objects the entry points use: one `Runtime` per process.

A runtime owns its process's one `Database` (engines are made once, here, never per request or per pull
run) and what every service of the process shares: the file store, the quarantine, the project contexts,
the vault cipher. Services get them as arguments and never build their own. Entry points `start` a runtime,
which first does the start-up work of a run (keys, schema, crash leftovers) before any worker starts;
worker processes `open` theirs.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING

import pydicom.config
from pydicom.dataset import Dataset

from bridge.errors import ConfigError
from bridge.ingest.projects import ProjectContext, build_projects
from bridge.ingest.service import IngestService
from bridge.keys import load_keys
from bridge.settings import Settings
from storage import migrate
from storage.db import Database
from storage.durable import sweep_incoming
from storage.filestore import FileStore
from storage.quarantine import Quarantine
from storage.vault import VaultCipher

if TYPE_CHECKING:
    from bridge.annotations.service import AnnotationService

logger = logging.getLogger(__name__)


class Runtime:
    """The services of one process, built once from the settings (see the module docstring). The secret is
    read (and created on first run) here, before any worker process of the run starts."""

    def __init__(self, settings: Settings, database: Database) -> None:
        quiet_pydicom()
        keys = load_keys(settings.security)
        self.settings = settings
        self.database = database
        self.store = FileStore(settings.storage.store_dir)
        self.quarantine = Quarantine(settings.storage.quarantine_dir)
        self.projects: dict[str, ProjectContext] = build_projects(settings, keys)
        self.cipher = VaultCipher(keys.vault_key())
        self._annotations: AnnotationService | None = None

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        """A worker process's runtime: the schema is current and start-up work done (by `start`)."""
        return cls(settings, database_for(settings))

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        """An entry point's runtime, after the start-up work done once per run: keys, schema, crash
        leftovers of the store and the quarantine."""
        database = open_database(settings)
        storage = settings.storage
        leftovers = sweep_incoming(storage.store_dir) + sweep_incoming(storage.quarantine_dir)
        if leftovers:
            logger.info("removed %d partial files left by an earlier crash", leftovers)
        return cls(settings, database)

    def ingest(self, actor: str) -> IngestService:
        """An ingest service for `actor` (an audit label), on this process's database; a SEG it stores
        becomes an annotation."""
        return IngestService(
            database=self.database,
            store=self.store,
            quarantine=self.quarantine,
            projects=self.projects,
            cipher=self.cipher,
            actor=actor,
            on_seg=self._annotate_seg,
        )

    def annotations(self) -> AnnotationService:
        """The annotation service of this process (made on first use: it brings highdicom and SimpleITK)."""
        if self._annotations is None:
            from bridge.annotations.service import AnnotationService

            self._annotations = AnnotationService.of(self.settings, self.database)
        return self._annotations

    def _annotate_seg(self, dataset: Dataset, project: str, source: str) -> None:
        from bridge.annotations.seg_intake import annotate_from_seg

        annotate_from_seg(self.annotations(), dataset, project=project, source=source)

    def close(self) -> None:
        self.database.dispose()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def database_for(settings: Settings) -> Database:
    """Engines for the configured research database and vault (not migrated)."""
    return Database(settings.database.url, settings.database.vault_url or None)


def open_database(settings: Settings) -> Database:
    """The database, migrated when `auto_migrate` is on; otherwise it must already be current."""
    database = database_for(settings)
    if settings.database.auto_migrate:
        migrate.upgrade(database)
    elif not migrate.is_current(database):
        database.dispose()
        raise ConfigError("the database schema is not current: run `pacs-bridge db upgrade`")
    return database


def quiet_pydicom() -> None:
    """pydicom logs offending values when it validates them: identified data must not reach the logs."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
