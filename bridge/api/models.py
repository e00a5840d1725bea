"""The API's response bodies (typed: they are the OpenAPI schema). Nothing here can hold an identifier of a
patient: subject codes, pseudo UIDs, shifted dates only."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel

from bridge.cohorts.filters import FilterFields, Page
from bridge.cohorts.query import Result, SeriesRow, TimepointRow


class ProjectOut(BaseModel):
    name: str
    subjects: int
    timepoints: int
    series: int
    instances: int
    quarantined: int


class SubjectOut(BaseModel):
    subject: str
    timepoints: list[TimepointRow]


class InstanceOut(BaseModel):
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    size: int
    sha256: str


class CohortParams(FilterFields, Page):
    """The query string of a cohort request: the filters and the page."""


class SaveCohort(BaseModel):
    name: str
    filters: FilterFields


class CohortOut(BaseModel):
    name: str
    project: str
    filters: dict[str, Any]
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class SnapshotOut(BaseModel):
    name: str
    cohort: str
    project: str
    content_hash: str
    series: int
    instances: int
    created_by: str
    created_at: dt.datetime


class Gone(BaseModel):
    series: list[str]
    instances: list[str]


class SnapshotRows(SnapshotOut):
    rows: list[SeriesRow]
    gone: Gone


class LabelIn(BaseModel):
    label: str | None  # None: hand the label back to the visit rules


class QuarantineOut(BaseModel):
    reason: str  # a reason class, never the full reason
    count: int


class AuditOut(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    action: str
    project: str | None
    object: str | None
    detail: str | None


__all__ = ["Result"]
