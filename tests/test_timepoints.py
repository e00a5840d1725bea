"""The baseline rule: the earliest dated study is day 0, every other timepoint counts its days from it."""

from __future__ import annotations

import datetime as dt

from bridge.settings import VisitSettings
from bridge.timepoints import MANUAL, RECEIVED, VISIT, days_from_baseline, place, visit_label
from storage.index import TimelineEntry


def test_days_count_from_the_earliest_dated_study() -> None:
    dates = {1: dt.date(2024, 3, 1), 2: dt.date(2024, 1, 1), 3: None, 4: dt.date(2024, 1, 31)}
    assert days_from_baseline(dates) == {1: 60, 2: 0, 3: None, 4: 30}


def test_a_subject_without_dated_studies_has_no_intervals() -> None:
    assert days_from_baseline({7: None}) == {7: None}
    assert days_from_baseline({}) == {}


VISITS = [
    VisitSettings(label="baseline", from_day=0, to_day=0),
    VisitSettings(label="week8", from_day=42, to_day=70),
]


def entry(key: int, day: int | None, label: str | None = None, source: str | None = None) -> TimelineEntry:
    date = dt.date(2024, 1, 1) + dt.timedelta(days=day) if day is not None else None
    return TimelineEntry(key, date, label, source)


def test_labels_come_from_the_visit_windows_and_unscheduled_outside() -> None:
    placed = place([entry(1, 0), entry(2, 56), entry(3, 30), entry(4, None)], VISITS)
    assert {k: (p.label, p.timepoint_index, p.label_source) for k, p in placed.items()} == {
        1: ("baseline", 0, VISIT),
        2: ("week8", 2, VISIT),
        3: ("unscheduled", 1, VISIT),
        4: ("unscheduled", None, VISIT),
    }


def test_an_earlier_study_moves_the_baseline_and_relabels() -> None:
    first = place([entry(1, 56)], VISITS)
    assert (first[1].label, first[1].days_from_baseline) == ("baseline", 0)
    later = place([entry(1, 56, first[1].label, first[1].label_source), entry(2, 0)], VISITS)
    assert (later[1].label, later[1].days_from_baseline, later[1].timepoint_index) == ("week8", 56, 1)
    assert (later[2].label, later[2].timepoint_index) == ("baseline", 0)


def test_received_and_hand_set_labels_are_kept() -> None:
    placed = place([entry(1, 0, "SCREEN", RECEIVED), entry(2, 56, "V3", MANUAL), entry(3, 60)], VISITS)
    assert [placed[k].label for k in (1, 2, 3)] == ["SCREEN", "V3", "week8"]
    assert [placed[k].label_source for k in (1, 2, 3)] == [RECEIVED, MANUAL, VISIT]


def test_without_a_schedule_there_is_no_label() -> None:
    assert place([entry(1, 0)], [])[1].label is None and visit_label(5, []) is None
