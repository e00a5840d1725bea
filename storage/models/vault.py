"""Vault tables: what is needed to re-identify, kept apart from the research tables (own MetaData, so that
they can live in their own database, `database.vault_url`). Identifiers are stored encrypted."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, LargeBinary, MetaData, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from storage.models.common import timestamp_column, utcnow

vault_metadata = MetaData()


class VaultModel(SQLModel, registry=registry(metadata=vault_metadata)):
    """Base of every vault table."""


class VaultSubject(VaultModel, table=True):
    """One patient of one project: keyed hash of (issuer, patient ID) -> subject code, identity encrypted."""

    __tablename__ = "vault_subject"
    __table_args__ = (
        UniqueConstraint("project", "patient_key"),
        UniqueConstraint("project", "subject_number"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project: str = Field(max_length=64)
    patient_key: str = Field(max_length=64)
    subject_number: int
    subject_code: str = Field(max_length=64)
    identity: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class VaultUid(VaultModel, table=True):
    """Pseudo UID -> original UID (encrypted)."""

    __tablename__ = "vault_uid"
    project: str = Field(primary_key=True, max_length=64)
    pseudo_uid: str = Field(primary_key=True, max_length=64)
    original: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class VaultStudy(VaultModel, table=True):
    """Pseudo Study Instance UID -> original accession number (encrypted)."""

    __tablename__ = "vault_study"
    project: str = Field(primary_key=True, max_length=64)
    pseudo_study_uid: str = Field(primary_key=True, max_length=64)
    accession: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
