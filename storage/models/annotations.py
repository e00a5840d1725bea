"""Research-side tables of the annotation work: tasks, annotations and their versions, review decisions, and
the outbox of SEG deliveries.

An annotation is one annotator's segmentation of one series; each correction is a new version (the mask
files are kept, never overwritten). Review decisions are appended, never edited. A delivery is one approved
version going to one destination; it is claimed, sent and marked by the workers of `serve`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field

from storage.models.common import timestamp_column, utcnow
from storage.models.research import ResearchModel


class Task(ResearchModel, table=True):
    """A subject to segment: the series chosen at each of its timepoints, the labels wanted."""

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    subject_id: int = Field(foreign_key="subject.id", index=True)
    labels: str = Field(max_length=1024)  # comma-separated, in the order asked
    cohort: str | None = Field(default=None, max_length=96)  # what selected it
    created_by: str = Field(max_length=128)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class TaskSeries(ResearchModel, table=True):
    task_id: int = Field(foreign_key="task.id", primary_key=True)
    series_id: int = Field(foreign_key="series.id", primary_key=True)


class TaskAssignment(ResearchModel, table=True):
    task_id: int = Field(foreign_key="task.id", primary_key=True)
    annotator: str = Field(max_length=64, primary_key=True, index=True)


class Annotation(ResearchModel, table=True):
    """One annotator's segmentation of one series, where it stands in the project's review stages."""

    __table_args__ = (Index("ix_annotation_project_stage", "project_id", "stage"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    series_id: int = Field(foreign_key="series.id", index=True)
    task_id: int | None = Field(default=None, foreign_key="task.id", index=True)
    annotator: str = Field(max_length=64, index=True)  # a user name, or the AE title a SEG came from
    stage: str = Field(max_length=32)  # the review stage it waits at (the first one when new)
    state: str = Field(max_length=16)  # open | rejected | approved (past the last stage)
    version: int = 1  # the current version
    labels: str = Field(default="", max_length=1024)  # the current version's, lower case: ",tumor,node," (queries)
    consensus_of: str | None = Field(default=None, max_length=256)  # annotation ids a combined one was made of
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class AnnotationVersion(ResearchModel, table=True):
    """One version's mask (a file under `storage.annotations_dir`) and its segments (JSON)."""

    __table_args__ = (UniqueConstraint("annotation_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    annotation_id: int = Field(foreign_key="annotation.id", index=True)
    version: int
    path: str = Field(max_length=512)  # relative to the annotations folder
    sha256: str = Field(max_length=64)
    segments: str = Field(sa_column=Column(Text, nullable=False))  # JSON list: label, codes, colour, voxels
    source: str = Field(max_length=32)  # import | seg | api | consensus
    seg_instance_uid: str | None = Field(default=None, max_length=64)  # the SEG it came from, if any
    created_by: str = Field(max_length=128)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class ReviewDecision(ResearchModel, table=True):
    """Who decided what about which version at which stage, and why."""

    id: int | None = Field(default=None, primary_key=True)
    annotation_id: int = Field(foreign_key="annotation.id", index=True)
    version: int
    stage: str = Field(max_length=32)
    decision: str = Field(max_length=16)  # approve | reject
    reviewer: str = Field(max_length=64)
    comment: str | None = Field(default=None, max_length=2048)
    at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class Delivery(ResearchModel, table=True):
    """One approved version on its way to one destination: queued on approval, claimed by a worker, sent,
    marked delivered only on a success status; retried with backoff while the destination is down."""

    __table_args__ = (
        UniqueConstraint("annotation_id", "version", "destination"),
        Index("ix_delivery_state_due", "state", "next_attempt_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    annotation_id: int = Field(foreign_key="annotation.id", index=True)
    version: int
    destination: str = Field(max_length=64)  # `research` (the bridge's own store) or a remote's name
    mode: str = Field(max_length=16)  # deidentified | reidentified
    state: str = Field(max_length=16)  # pending | sending | delivered | failed
    attempts: int = 0
    next_attempt_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    claimed_by: str | None = Field(default=None, max_length=128)
    last_error: str | None = Field(default=None, max_length=1024)  # never PHI
    seg_series_uid: str | None = Field(default=None, max_length=64)  # what was delivered (research-side UID)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    delivered_at: dt.datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
