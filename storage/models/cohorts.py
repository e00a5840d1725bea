"""Research-side tables of the data managers' work: saved cohorts (their filters), frozen snapshots (the
series and instances a cohort had at one moment) and the API's users (token hashes only)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, DateTime, Text, UniqueConstraint
from sqlmodel import Field

from storage.models.common import timestamp_column, utcnow
from storage.models.research import ResearchModel


class SavedCohort(ResearchModel, table=True):
    """A named query of one project: its results change as data arrives."""

    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str = Field(max_length=64)
    query: str = Field(sa_column=Column(Text, nullable=False))  # the filters as JSON
    created_by: str = Field(max_length=128)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class Snapshot(ResearchModel, table=True):
    """A cohort's series list frozen at `created_at`, with the hash of its content; never changes."""

    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str = Field(max_length=96)  # COHORT@N
    cohort: str = Field(max_length=64)
    query: str = Field(sa_column=Column(Text, nullable=False))
    content_hash: str = Field(max_length=64)
    series_count: int
    instance_count: int
    created_by: str = Field(max_length=128)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class SnapshotSeries(ResearchModel, table=True):
    """One series of a snapshot, with its row as the query gave it (JSON), so that it survives deletion."""

    snapshot_id: int = Field(foreign_key="snapshot.id", primary_key=True)
    series_uid: str = Field(max_length=64, primary_key=True)
    row: str = Field(sa_column=Column(Text, nullable=False))


class SnapshotInstance(ResearchModel, table=True):
    """One instance of a snapshot and the hash of its stored file at the time."""

    snapshot_id: int = Field(foreign_key="snapshot.id", primary_key=True)
    sop_instance_uid: str = Field(max_length=64, primary_key=True)
    series_uid: str = Field(max_length=64)
    sha256: str = Field(max_length=64)


class ApiUser(ResearchModel, table=True):
    """Who may call the HTTP API: a role, the projects it may see (empty: all), the SHA-256 of its token."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    role: str = Field(max_length=16)
    projects: str = Field(default="", max_length=1024)  # comma-separated project names
    token_hash: str = Field(unique=True, max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    revoked_at: dt.datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
