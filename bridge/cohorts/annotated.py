"""The cohort filter on annotations: "has an approved segmentation with label X (at stage S)", as an EXISTS
clause on the series (the query model's extension point, `bridge.cohorts.query.SERIES_CONDITIONS`)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, and_, exists, or_, select

from bridge.cohorts.filters import CohortFilters
from storage.models.annotations import Annotation, ReviewDecision
from storage.models.research import Series

A, D = Annotation.__table__.c, ReviewDecision.__table__.c  # type: ignore[attr-defined]
S = Series.__table__.c  # type: ignore[attr-defined]


def annotation_conditions(f: CohortFilters) -> Iterable[ColumnElement[bool]]:
    if not f.segmented:
        return
    labelled = or_(*(A.labels.like(f"%,{label.lower()},%", escape="\\") for label in map(_escaped, f.segmented)))
    if f.segmented_stage is None:
        approved = A.state == "approved"
    else:  # its current version approved at that stage
        approved = exists(
            select(D.id).where(
                D.annotation_id == A.id,
                D.version == A.version,
                D.stage == f.segmented_stage,
                D.decision == "approve",
            )
        )
    yield exists(select(A.id).where(A.series_id == S.id, labelled, and_(approved)))


def _escaped(label: str) -> str:
    return label.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
