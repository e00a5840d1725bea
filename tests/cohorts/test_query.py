"""The query model on a synthetic trial sent through the real ingest, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cohorts.filters import CohortFilters, Level, Page
from bridge.cohorts.query import QueryError, run
from bridge.wiring import Runtime
from tests.cohorts import population
from tests.conftest import make_settings

EXAMPLE = {
    "project": "lung",
    "modality": ["CT"],
    "body_part": ["chest"],
    "slice_thickness_max": 2.5,
    "min_followups": 2,
}


@pytest.fixture
def trial(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    with population.ingested(tmp_path, database_url) as runtime:
        yield runtime


def query(runtime: Runtime, level: Level = Level.SERIES, sort: str | None = None, **filters: object):  # type: ignore[no-untyped-def]
    with runtime.database.reading() as session:
        return run(session, CohortFilters(**{"project": "lung", **filters}), Page(level=level, sort=sort, limit=1000))


def test_the_example_cohort_at_each_level(trial: Runtime) -> None:
    subjects = query(trial, Level.SUBJECT, **EXAMPLE)
    assert {row.subject for row in subjects.rows} == population.IN_EXAMPLE and subjects.total == 2
    assert [(row.timepoints, row.series, row.instances) for row in subjects.rows] == [(3, 3, 6), (3, 3, 6)]

    timepoints = query(trial, Level.TIMEPOINT, **EXAMPLE)
    labels = [(row.subject, row.timepoint_label, row.timepoint_index) for row in timepoints.rows]
    assert labels == [
        ("LUNG-0001", "baseline", 0),
        ("LUNG-0001", "week8", 1),
        ("LUNG-0001", "week16", 2),
        ("LUNG-0004", "baseline", 0),
        ("LUNG-0004", "week8", 1),
        ("LUNG-0004", "unscheduled", 2),
    ]
    assert [row.days_from_baseline for row in timepoints.rows] == [0, 56, 112, 0, 60, 200]

    series = query(trial, **EXAMPLE)
    assert series.total == 6 and all(row.slice_thickness <= 2.5 for row in series.rows)  # type: ignore[operator]
    row = series.rows[0].model_dump()
    for key in ("subject", "timepoint_label", "days_from_baseline", "study_instance_uid", "series_instance_uid"):
        assert row[key] is not None
    assert (row["modality"], row["body_part"], row["instances"]) == ("CT", "CHEST", 2)


def test_each_filter_narrows_as_it_says(trial: Runtime) -> None:
    everything = query(trial, Level.SERIES)
    assert everything.total == 16  # every series of the trial
    assert query(trial, modality=["mr"]).total == 1
    assert query(trial, body_part=["ABDOMEN"]).total == 3
    assert query(trial, slice_thickness_min=4.0).total == 1
    assert query(trial, label=["week16"]).total == 4
    assert query(trial, timepoint_index=[0]).total == 6
    assert query(trial, days_min=100, days_max=150).total == 4
    assert {r.subject for r in query(trial, Level.SUBJECT, subject=["LUNG-0006", "LUNG-0002"]).rows} == {
        "LUNG-0002",
        "LUNG-0006",
    }
    assert query(trial, Level.SUBJECT, min_timepoints=3).total == 5
    assert query(trial, Level.SUBJECT, min_timepoints=3, modality=["CT"], slice_thickness_max=2.0).total == 2
    assert query(trial, description="no such text").total == 0
    assert query(trial, manufacturer="acme").total == 16  # case-insensitive contains
    assert query(trial, contrast="no").total == 16 and query(trial, contrast="yes").total == 0
    assert query(trial, min_instances=3).total == 0 and query(trial, min_instances=2).total == 16
    first = everything.rows[0]
    dated = query(trial, date_from=first.study_date, date_to=first.study_date)
    assert {row.subject for row in dated.rows} == {first.subject}


def test_pages_sort_and_count(trial: Runtime) -> None:
    with trial.database.reading() as session:
        filters = CohortFilters(project="lung")
        pages = [run(session, filters, Page(level=Level.SERIES, limit=5, offset=o)) for o in (0, 5, 10, 15)]
        past = run(session, filters, Page(level=Level.SERIES, limit=5, offset=100))
    uids = [row.series_instance_uid for page in pages for row in page.rows]  # type: ignore[union-attr]
    assert len(uids) == len(set(uids)) == 16 and all(page.total == 16 for page in pages)
    assert past.rows == [] and past.total == 16
    by_days = query(trial, Level.TIMEPOINT, sort="-days_from_baseline")
    assert by_days.rows[0].days_from_baseline == 200  # type: ignore[union-attr]
    with pytest.raises(QueryError, match="cannot sort by 'patient_name'"):
        query(trial, sort="patient_name")


def test_an_unknown_project_is_an_empty_answer(trial: Runtime) -> None:
    with trial.database.reading() as session:
        assert run(session, CohortFilters(project="nosuch"), Page()).total == 0


def test_bad_filters_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="days_min .* is above days_max"):
        CohortFilters(project="lung", days_min=10, days_max=5)
    with pytest.raises(ValueError, match="Extra inputs"):
        CohortFilters(project="lung", patient_name="x")  # type: ignore[call-arg]


def test_an_earlier_study_arriving_later_moves_the_baseline_and_the_labels(tmp_path: Path) -> None:
    runtime = Runtime.start(make_settings(tmp_path, f"sqlite:///{tmp_path / 'bridge.db'}", lung=population.PROJECT))
    try:
        service = runtime.ingest("test")
        late, early = (
            population.write(tmp_path / n, trial={7: [population.Scan(d)]}) for n, d in (("a", 56), ("b", 0))
        )
        for path in late:
            service.ingest(path, project="lung", source="test")
        first = query(runtime, Level.TIMEPOINT).rows
        assert [(r.timepoint_label, r.days_from_baseline) for r in first] == [("baseline", 0)]  # type: ignore[union-attr]
        for path in early:
            service.ingest(path, project="lung", source="test")
        labels = [
            (r.timepoint_label, r.days_from_baseline, r.timepoint_index) for r in query(runtime, Level.TIMEPOINT).rows
        ]  # type: ignore[union-attr]
        assert labels == [("baseline", 0, 0), ("week8", 56, 1)]
    finally:
        runtime.close()
