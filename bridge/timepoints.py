"""The trial's clock: a subject's baseline, each timepoint's interval from it, its index and its visit label.

The baseline is the subject's earliest dated study; every timepoint's `days_from_baseline` is its shifted
date less the baseline's (intervals survive de-identification: one date offset per subject), and its
`timepoint_index` its place in date order (0 = baseline). The label comes, first, from a data manager (never
overwritten by the rules), then from the Clinical Trial Time Point ID received with the data, then from the
project's visit windows (`unscheduled` outside them). An earlier study arriving later moves the baseline, so
all of it is worked out again whenever a timepoint is added, or the schedule changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlmodel import Session

from bridge.settings import UNSCHEDULED, VisitSettings
from storage import audit, index, queries
from storage.models.research import Timepoint

MANUAL = "manual"
RECEIVED = "received"
VISIT = "visit"


def days_from_baseline(dates: Mapping[int, dt.date | None]) -> dict[int, int | None]:
    """Per timepoint id, its days from the earliest of the dates (None for an undated timepoint)."""
    known = [date for date in dates.values() if date is not None]
    baseline = min(known) if known else None
    return {key: (date - baseline).days if baseline and date else None for key, date in dates.items()}


def visit_label(days: int | None, visits: Sequence[VisitSettings]) -> str | None:
    """The label of the window `days` falls in, `unscheduled` outside them all; None without a schedule."""
    if not visits:
        return None
    if days is not None:
        for visit in visits:
            if visit.from_day <= days <= visit.to_day:
                return visit.label
    return UNSCHEDULED


@dataclass(frozen=True)
class Placement:
    """Where one timepoint stands on its subject's clock."""

    days_from_baseline: int | None
    timepoint_index: int | None
    label: str | None
    label_source: str | None


def place(timepoints: Sequence[index.TimelineEntry], visits: Sequence[VisitSettings]) -> dict[int, Placement]:
    """Per timepoint id, its interval, index and label (the rules above; hand-set and received labels kept)."""
    days = days_from_baseline({entry.id: entry.study_date for entry in timepoints})
    dated = sorted((d, key) for key, d in days.items() if d is not None)
    order = {key: number for number, (_, key) in enumerate(dated)}
    placed = {}
    for entry in timepoints:
        label, source = entry.label, entry.label_source
        if source not in (MANUAL, RECEIVED):
            label = visit_label(days[entry.id], visits)
            source = VISIT if label is not None else None
        placed[entry.id] = Placement(days[entry.id], order.get(entry.id), label, source)
    return placed


def update_timeline(session: Session, *, subject_id: int, visits: Sequence[VisitSettings]) -> None:
    """Work out again the clock of every timepoint of a subject (after one was added or the schedule changed);
    the subject stays locked until the transaction ends."""
    index.lock_subject(session, subject_id=subject_id)
    timepoints = index.timeline_of(session, subject_id=subject_id)
    index.set_placements(session, {key: vars(p) for key, p in place(timepoints, visits).items()})


class TimepointError(LookupError):
    """No such timepoint, or several where one was meant; the message says how to name it."""


class LabelError(ValueError):
    """A label that cannot go into Clinical Trial Time Point ID (LO)."""


def relabel(session: Session, *, project_id: int, visits: Sequence[VisitSettings]) -> int:
    """Work the clocks of a project out again (after its visit schedule changed); returns the subjects seen."""
    subjects = queries.subject_ids(session, project_id=project_id)
    for subject_id in subjects:
        update_timeline(session, subject_id=subject_id, visits=visits)
    return len(subjects)


def label_by_hand(
    session: Session,
    *,
    project: str,
    subject_code: str,
    which: str,
    label: str | None,
    visits: Sequence[VisitSettings],
    actor: str,
) -> Timepoint:
    """Set (or with None, hand back to the rules) the label of the subject's timepoint `which`: its days from
    baseline, or its (de-identified) Study Instance UID. Rule-made labels never overwrite a hand-set one.
    Audited."""
    if label is not None and not (0 < len(label) <= 64 and label.isprintable() and "\\" not in label):
        raise LabelError("a label is 1 to 64 printable characters, no backslash")
    project_id = queries.project_id_of(session, project)
    found = queries.find_timepoints(session, project_id=project_id, subject_code=subject_code) if project_id else []
    if not found:
        raise TimepointError(f"no subject {subject_code!r} in project {project!r}")
    by_days = which.lstrip("-").isdigit()
    chosen = [t for t in found if t.study_uid == which or (by_days and t.days_from_baseline == int(which))]
    if len(chosen) != 1:
        known = ", ".join(str(t.days_from_baseline) for t in found)
        what = "no timepoint" if not chosen else "several timepoints"
        raise TimepointError(
            f"{what} {which!r} of {subject_code}: name it by days from baseline ({known}) or study UID"
        )
    timepoint = chosen[0]
    index.set_label(session, timepoint, label, MANUAL if label else None)
    if label is None:
        update_timeline(session, subject_id=timepoint.subject_id, visits=visits)
    audit.record_event(
        session,
        actor=actor,
        action="timepoint.label",
        object=f"timepoint:{timepoint.study_uid}",
        project_id=project_id,
        detail=f"{subject_code} day {timepoint.days_from_baseline}: {timepoint.label} ({timepoint.label_source})",
    )
    return timepoint
