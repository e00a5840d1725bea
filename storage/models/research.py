"""Research-side tables: the de-identified index (project -> subject -> timepoint -> series -> instance).

Nothing here may hold an identifier of a patient: every UID is a pseudo UID, every date is shifted, subject
codes are pseudonyms. The identified side lives in `storage.models.vault`, with its own metadata (and
optionally its own database).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Column, DateTime, Index, MetaData, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from storage.models.common import timestamp_column, utcnow

research_metadata = MetaData()


class ResearchModel(SQLModel, registry=registry(metadata=research_metadata)):
    """Base of every research-side table (own MetaData, so the vault can live elsewhere)."""


class Project(ResearchModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class Subject(ResearchModel, table=True):
    """A pseudonymous patient of one project."""

    __table_args__ = (UniqueConstraint("project_id", "subject_code"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    subject_code: str = Field(max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class Timepoint(ResearchModel, table=True):
    """One study of a subject: shifted date and interval from the subject's baseline (earliest study)."""

    __table_args__ = (
        UniqueConstraint("project_id", "study_uid"),
        Index("ix_timepoint_subject_days", "subject_id", "days_from_baseline"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    subject_id: int = Field(foreign_key="subject.id", index=True)
    study_uid: str = Field(max_length=64)
    study_date: dt.date | None = None
    study_time: str | None = Field(default=None, max_length=16)  # TM as received (shifted with the date, if so)
    patient_sex: str | None = Field(default=None, max_length=16)
    days_from_baseline: int | None = None
    timepoint_index: int | None = None  # 0 = baseline, then by date; None while undated
    label: str | None = Field(default=None, max_length=64)
    label_source: str | None = Field(default=None, max_length=16)  # received | visit | manual
    description: str | None = Field(default=None, max_length=64)
    modalities: str = Field(default="", max_length=128)
    series_count: int = 0
    instance_count: int = 0
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class Series(ResearchModel, table=True):
    """A series with the acquisition parameters radiomics selects on.

    It also carries a copy of its timepoint's subject, date and place on the subject's clock (the `subject_id`
    to `timepoint_label` columns): a cohort query then filters and counts series without a join.
    `storage.index` writes the copies with the series and keeps them in step when a timepoint is placed again
    or relabelled.
    """

    __table_args__ = (
        UniqueConstraint("project_id", "series_uid"),
        Index("ix_series_project_modality", "project_id", "modality"),
        # what a cohort's tally reads, without touching the table: the usual selection, then what the counted
        # conditions count. Given a modality and a body part, the series come in subject order (grouped by
        # subject without sorting), a slice thickness range checked in the index ...
        Index(
            "ix_series_cohort",
            "project_id",
            "modality",
            "body_part",
            "subject_id",
            "timepoint_id",
            "timepoint_index",
            "slice_thickness",
        ),
        # ... given a modality and a thickness range but no body part, the range is read, and nothing else.
        # Without the body part, it is no choice for a selection that names one, even when PostgreSQL plans a
        # statement without its values (prepared: psycopg prepares a statement from its sixth run)
        Index(
            "ix_series_cohort_thickness",
            "project_id",
            "modality",
            "slice_thickness",
            "subject_id",
            "timepoint_id",
            "timepoint_index",
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    timepoint_id: int = Field(foreign_key="timepoint.id", index=True)
    series_uid: str = Field(max_length=64)
    modality: str | None = Field(default=None, max_length=16, index=True)
    body_part: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=64)
    series_number: int | None = None
    frame_of_reference_uid: str | None = Field(default=None, max_length=64)
    manufacturer: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=64)
    slice_thickness: float | None = None
    pixel_spacing_row: float | None = None
    pixel_spacing_col: float | None = None
    kvp: float | None = None
    convolution_kernel: str | None = Field(default=None, max_length=64)
    contrast_agent: str | None = Field(default=None, max_length=64)
    instance_count: int = 0
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    # copies of the timepoint's (see above)
    subject_id: int | None = None
    study_date: dt.date | None = None
    days_from_baseline: int | None = None
    timepoint_index: int | None = None
    timepoint_label: str | None = Field(default=None, max_length=64)


class Instance(ResearchModel, table=True):
    """A de-identified instance in the file store."""

    __table_args__ = (UniqueConstraint("project_id", "sop_instance_uid"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    series_id: int = Field(foreign_key="series.id", index=True)
    sop_instance_uid: str = Field(max_length=64)
    sop_class_uid: str = Field(max_length=64)
    transfer_syntax_uid: str = Field(max_length=64)
    instance_number: int | None = None
    rows: int | None = None  # what QIDO-RS answers at instance level, from the index
    columns: int | None = None
    bits_allocated: int | None = None
    number_of_frames: int | None = None
    path: str = Field(max_length=512)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    source: str = Field(max_length=64)
    received_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class QuarantineItem(ResearchModel, table=True):
    """An instance refused by ingest. The bytes (identified) stay in the quarantine folder, not here."""

    id: int | None = Field(default=None, primary_key=True)
    project_id: int | None = Field(default=None, foreign_key="project.id", index=True)
    reason: str = Field(max_length=256)
    path: str = Field(max_length=512)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    source: str = Field(max_length=64)
    received_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class AuditEvent(ResearchModel, table=True):
    """Who did what to which (pseudonymous) object. Details never carry PHI."""

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64, index=True)
    project_id: int | None = Field(default=None, foreign_key="project.id", index=True)
    object: str | None = Field(default=None, max_length=128)
    detail: str | None = Field(default=None, max_length=1024)


class ScheduleState(ResearchModel, table=True):
    """Where a configured pull schedule stands. The watermark is the bridge's own clock (the day the last
    successful run started), never a study's date."""

    name: str = Field(primary_key=True, max_length=64)
    runs: int = 0
    last_started_at: dt.datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_finished_at: dt.datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_ok: bool | None = None
    last_result: str | None = Field(default=None, max_length=1024)  # counts and the remote's message
    watermark: dt.date | None = None  # the next run asks for studies from this day (minus the lookback) on
