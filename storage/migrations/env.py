"""Alembic environment shared by the research and the vault migrations; `storage.migrate` picks the target."""

from __future__ import annotations

from alembic import context

import storage.models.annotations  # noqa: F401  (registers its tables in research_metadata)
import storage.models.cohorts  # noqa: F401  (registers its tables in research_metadata)
from storage.models.research import research_metadata
from storage.models.vault import vault_metadata

config = context.config
target = config.attributes.get("target", "research")
metadata = vault_metadata if target == "vault" else research_metadata
version_table = "alembic_version_vault" if target == "vault" else "alembic_version"

connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `pacs-bridge db upgrade` (storage.migrate), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=version_table,
    render_as_batch=connection.dialect.name == "sqlite",
    # research and vault may share a database: each target sees only its own tables
    include_name=lambda name, type_, _parent: type_ != "table" or name in metadata.tables,
)
with context.begin_transaction():
    context.run_migrations()
