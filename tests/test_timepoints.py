"""The baseline rule: the earliest dated study is day 0, every other timepoint counts its days from it."""

from __future__ import annotations

import datetime as dt

from bridge.timepoints import days_from_baseline


def test_days_count_from_the_earliest_dated_study() -> None:
    dates = {1: dt.date(2024, 3, 1), 2: dt.date(2024, 1, 1), 3: None, 4: dt.date(2024, 1, 31)}
    assert days_from_baseline(dates) == {1: 60, 2: 0, 3: None, 4: 30}


def test_a_subject_without_dated_studies_has_no_intervals() -> None:
    assert days_from_baseline({7: None}) == {7: None}
    assert days_from_baseline({}) == {}
