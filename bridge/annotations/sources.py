"""The series an annotation is drawn on, as the index and the store hold it: its row, its subject's other
series (to say which one a misplaced mask belongs to), and its files' headers in the series' index order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import sqlmodel
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlmodel import Session, col

from bridge.annotations.geometry import GeometryError, SeriesGeometry, series_geometry
from bridge.errors import AnnotationError, NotFound
from storage.models.research import Instance, Project, Series, Subject, Timepoint

NOT_IMAGES = ("SEG", "SR", "RTSTRUCT", "PR", "KO", "DOC")  # series that cannot be segmented


@dataclass(frozen=True)
class SeriesRecord:
    id: int
    uid: str
    project_id: int
    project: str
    subject_id: int
    subject_code: str
    timepoint_id: int
    study_uid: str
    timepoint_label: str | None
    days_from_baseline: int | None
    description: str | None
    series_number: int | None
    modality: str | None

    def named(self) -> str:
        """How messages name it: description, number and (pseudo) UID, never anything identifying."""
        description = self.description or "no description"
        return f"series {self.uid} ({description!r}, number {self.series_number}, {self.modality})"


_COLUMNS = (
    Series.id,
    Series.series_uid,
    Series.project_id,
    Project.name,
    Subject.id,
    Subject.subject_code,
    Timepoint.id,
    Timepoint.study_uid,
    Timepoint.label,
    Timepoint.days_from_baseline,
    Series.description,
    Series.series_number,
    Series.modality,
)


def _selected() -> Any:
    return (
        select(*_COLUMNS)  # type: ignore[call-overload]
        .join(Timepoint, Timepoint.id == Series.timepoint_id)
        .join(Subject, Subject.id == Timepoint.subject_id)
        .join(Project, Project.id == Series.project_id)
    )


def find_series(session: Session, *, series_uid: str, project: str | None = None) -> SeriesRecord:
    """The indexed series with this (de-identified) UID, in `project` when given."""
    statement = _selected().where(Series.series_uid == series_uid)
    if project is not None:
        statement = statement.where(Project.name == project)
    rows = session.execute(statement).all()
    if not rows:
        where = f" in project {project!r}" if project else ""
        raise NotFound(f"no indexed series {series_uid}{where} (use the de-identified Series Instance UID)")
    if len(rows) > 1:
        raise AnnotationError(f"series {series_uid} is in several projects: name the project")
    return SeriesRecord(*rows[0])


def series_by_id(session: Session, series_id: int) -> SeriesRecord:
    row = session.execute(_selected().where(Series.id == series_id)).one()
    return SeriesRecord(*row)


def subject_series(session: Session, *, subject_id: int) -> list[SeriesRecord]:
    """Every image series of the subject (all timepoints), the candidates a misplaced mask may belong to."""
    statement = _selected().where(Subject.id == subject_id)
    rows = session.execute(statement.order_by(Timepoint.days_from_baseline, Series.series_number)).all()
    return [SeriesRecord(*row) for row in rows if (row[-1] or "") not in NOT_IMAGES]


def instance_paths(session: Session, *, series_id: int) -> list[str]:
    statement = sqlmodel.select(Instance.path).where(Instance.series_id == series_id).order_by(col(Instance.id))
    return list(session.exec(statement))


def read_headers(root: Path, paths: Sequence[str]) -> list[Dataset]:
    """The files' elements up to the pixel data: all geometry needs, and all a SEG's references need."""
    return [pydicom.dcmread(root / path, stop_before_pixels=True) for path in paths]


def geometry_of(root: Path, paths: Sequence[str], record: SeriesRecord) -> SeriesGeometry:
    """The series' grid and index order, from its files' headers; a clear error when it is no volume."""
    if not paths:
        raise AnnotationError(f"{record.named()} has no instances in the store")
    try:
        return series_geometry(read_headers(root, paths))
    except GeometryError as error:
        raise AnnotationError(f"{record.named()} cannot be segmented as one volume: {error}") from None
