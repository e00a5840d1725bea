"""The trial's clock: a subject's baseline and each timepoint's interval from it.

The baseline is the subject's earliest dated study; every timepoint's `days_from_baseline` is its shifted
date less the baseline's (intervals survive de-identification: one date offset per subject). An earlier
study arriving later moves the baseline, so the intervals are worked out again whenever a timepoint is
added.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlmodel import Session

from storage import index


def days_from_baseline(dates: Mapping[int, dt.date | None]) -> dict[int, int | None]:
    """Per timepoint id, its days from the earliest of the dates (None for an undated timepoint)."""
    known = [date for date in dates.values() if date is not None]
    baseline = min(known) if known else None
    return {key: (date - baseline).days if baseline and date else None for key, date in dates.items()}


def update_intervals(session: Session, *, subject_id: int) -> None:
    """Recompute the days from baseline of every timepoint of a subject (after one was added)."""
    timepoints = index.timepoints_of(session, subject_id=subject_id)
    dates = {timepoint.id: timepoint.study_date for timepoint in timepoints if timepoint.id is not None}
    index.set_days_from_baseline(session, days_from_baseline(dates))
