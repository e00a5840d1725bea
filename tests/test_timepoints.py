"""The baseline rule: the earliest dated study is day 0, every other timepoint counts its days from it."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select

from bridge.settings import VisitSettings
from bridge.timepoints import MANUAL, RECEIVED, VISIT, days_from_baseline, place, visit_label
from storage.index import TimelineEntry
from storage.models.research import Timepoint


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


def test_two_transactions_adding_studies_of_one_subject_take_turns_on_its_clock() -> None:
    """PostgreSQL, two ingest transactions at once (two workers): one adds the subject's day-112 study, the
    other its day-0 study, while the day-56 study is already indexed. Each works the clock out with the
    subject locked, so the second sees the first's study: 0, 56 and 112 days, not 0, 56 and 56."""
    import threading

    from sqlmodel import Session

    from bridge.timepoints import update_timeline
    from storage import index, migrate
    from storage.db import Database
    from tests.conftest import postgres_schema_url

    def add(session: Session, subject_id: int, day: int) -> None:
        date = dt.date(2024, 1, 1) + dt.timedelta(days=day)
        values = {"study_uid": f"2.25.{day + 1}", "study_date": date}
        index.ensure_timepoint(session, project_id=1, subject_id=subject_id, values=values)
        update_timeline(session, subject_id=subject_id, visits=VISITS)

    schemas = postgres_schema_url()
    database = Database(next(schemas))
    try:
        migrate.upgrade(database)
        with database.session() as session:
            project = index.ensure_project(session, "lung")
            assert project.id == 1
            subject = index.ensure_subject(session, project_id=1, subject_code="LUNG-0001")
            assert subject.id is not None
            subject_id = subject.id
            add(session, subject_id, 56)
        first = Session(database.research_engine)
        add(first, subject_id, 112)  # not committed yet: the subject stays locked

        def second() -> None:
            with Session(database.research_engine) as session:
                add(session, subject_id, 0)
                session.commit()

        other = threading.Thread(target=second)
        other.start()
        other.join(timeout=2)  # without the lock it would finish here, blind to the day-112 study
        first.commit()
        first.close()
        other.join(timeout=30)
        assert not other.is_alive()
        with database.reading() as session:
            days = sorted(t.days_from_baseline for t in session.exec(select(Timepoint)).all())
        assert days == [0, 56, 112]
    finally:
        database.dispose()
        schemas.close()
