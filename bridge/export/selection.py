"""What an export takes from the index: a cohort's series with their instances as stored now, or a
snapshot's frozen instances where the store still holds them unchanged."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select as core_select
from sqlmodel import Session, select

from bridge.cohorts import saved
from bridge.cohorts.filters import CohortFilters
from bridge.cohorts.query import SeriesRow, each_series
from bridge.export.folder import Selection, Source
from bridge.export.segmentations import approved
from storage.models.cohorts import Snapshot, SnapshotInstance
from storage.models.research import Instance, Project, Series

_CHUNK = 500
SERIES, INSTANCE = Series.__table__, Instance.__table__  # type: ignore[attr-defined]
SC, IC = SERIES.c, INSTANCE.c


def _stored(session: Session, project_id: int, series_uids: list[str]) -> dict[str, list[tuple[str, str, str, int]]]:
    """Per series UID: (SOP Instance UID, store path, sha256, instance number) of its instances."""
    found: dict[str, list[tuple[str, str, str, int]]] = defaultdict(list)
    for start in range(0, len(series_uids), _CHUNK):
        statement = (
            core_select(SC.series_uid, IC.sop_instance_uid, IC.path, IC.sha256, IC.instance_number)
            .join_from(INSTANCE, SERIES, SC.id == IC.series_id)
            .where(SC.project_id == project_id, SC.series_uid.in_(series_uids[start : start + _CHUNK]))
        )
        for series_uid, uid, path, sha, number in session.execute(statement).all():
            found[series_uid].append((uid, path, sha, number if number is not None else 0))
    for instances in found.values():
        instances.sort(key=lambda item: (item[3], item[0]))
    return found


def _project_id(session: Session, name: str) -> int | None:
    return session.exec(select(Project.id).where(Project.name == name)).first()


def of_cohort(session: Session, filters: CohortFilters, store: Path, masks_root: Path | None = None) -> Selection:
    rows = list(each_series(session, filters))
    project_id = _project_id(session, filters.project)
    stored = _stored(session, project_id, [r.series_instance_uid for r in rows]) if project_id else {}
    chosen = Selection(series=_sources(rows, stored, store))
    return _with_segmentations(session, chosen, project_id, store, masks_root)


def _with_segmentations(
    session: Session, chosen: Selection, project_id: int | None, store: Path, masks_root: Path | None
) -> Selection:
    """The selection with the approved segmentations of its series (when the masks' folder is known)."""
    if project_id is None or masks_root is None:
        return chosen
    rows = {row.series_instance_uid: row for row, _ in chosen.series}
    segs = approved(session, project_id=project_id, series_uids=list(rows), store=store, masks_root=masks_root)
    return replace(chosen, segmentations=[(rows[seg.source_series_uid], seg) for seg in segs])


def of_snapshot(session: Session, snapshot: Snapshot, store: Path, masks_root: Path | None = None) -> Selection:
    rows = saved.snapshot_series(session, snapshot)
    frozen = {(i.sop_instance_uid, i.sha256) for i in _frozen(session, snapshot)}
    stored = _stored(session, snapshot.project_id, [r.series_instance_uid for r in rows])
    kept = {key: [i for i in items if (i[0], i[2]) in frozen] for key, items in stored.items()}
    present = {(i[0], i[2]) for items in kept.values() for i in items}
    missing = sorted(uid for uid, sha in frozen if (uid, sha) not in present)
    chosen = Selection(series=_sources(rows, kept, store), missing=missing)
    return _with_segmentations(session, chosen, snapshot.project_id, store, masks_root)


def _frozen(session: Session, snapshot: Snapshot) -> Iterable[SnapshotInstance]:
    return session.exec(select(SnapshotInstance).where(SnapshotInstance.snapshot_id == snapshot.id)).all()


def _sources(
    rows: list[SeriesRow], stored: dict[str, list[tuple[str, str, str, int]]], store: Path
) -> list[tuple[SeriesRow, list[Source]]]:
    return [
        (row, [Source(uid, store / path, sha) for uid, path, sha, _ in stored.get(row.series_instance_uid, [])])
        for row in rows
        if stored.get(row.series_instance_uid)
    ]
