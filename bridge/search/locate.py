"""Where the files of a study, series or instance are: what WADO-RS, C-MOVE and C-GET send, in the order a
viewer wants them (series by number, instances by number)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session

from bridge.search.attributes import IMG, INSTANCE, PROJECT, SER, SERIES, STU, TIMEPOINT


@dataclass(frozen=True)
class Located:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    number_of_frames: int | None
    path: str  # relative to the file store
    size: int


def locate(
    session: Session,
    *,
    projects: Sequence[str] | None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uids: Sequence[str] = (),
) -> list[Located]:
    """The instances within the projects (None: every project) under the UIDs given; [] when none."""
    statement = (
        select(
            STU.study_uid,
            SER.series_uid,
            IMG.sop_instance_uid,
            IMG.sop_class_uid,
            IMG.transfer_syntax_uid,
            IMG.number_of_frames,
            IMG.path,
            IMG.size,
        )
        .select_from(
            INSTANCE.join(SERIES, SER.id == IMG.series_id)
            .join(TIMEPOINT, STU.id == SER.timepoint_id)
            .join(PROJECT, PROJECT.c.id == IMG.project_id)
        )
        .order_by(STU.id, SER.series_number, SER.id, IMG.instance_number, IMG.id)
    )
    if projects is not None:
        statement = statement.where(PROJECT.c.name.in_(list(projects)))
    if study_uid is not None:
        statement = statement.where(STU.study_uid == study_uid)
    if series_uid is not None:
        statement = statement.where(SER.series_uid == series_uid)
    if sop_instance_uids:
        statement = statement.where(IMG.sop_instance_uid.in_(list(sop_instance_uids)))
    return [Located(*row) for row in session.execute(statement).all()]
