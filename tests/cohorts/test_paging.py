"""Pages of the cohort, on SQLite and PostgreSQL: put together, the pages of any size are the whole answer, in
order, with the same total, whichever level, order and counted condition (a page ordered by subject reads only
the subjects that hold it; ordered otherwise, the whole cohort)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.cohorts.filters import CohortFilters, Level, Page
from bridge.cohorts.query import Result, run, tally
from bridge.wiring import Runtime
from tests.cohorts import population
from tests.conftest import postgres_schema_url

FILTERS: list[dict[str, object]] = [
    {},
    {"modality": ["CT"], "body_part": ["CHEST"], "slice_thickness_max": 2.5, "min_followups": 2},
    {"min_timepoints": 3},
    {"modality": ["CT"], "slice_thickness_max": 1.25},
    {"subject": ["LUNG-0004", "LUNG-0002"], "timepoint_index": [1, 2]},
    {"description": "no such text"},
]
SORTS = [None, "subject", "+subject,-days_from_baseline", "-subject", "-instances", "days_from_baseline"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def trial(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """The trial of `population`, ingested once per kind of database for the whole module (read only)."""
    folder = tmp_path_factory.mktemp("trial")
    urls = iter([f"sqlite:///{folder / 'bridge.db'}"]) if request.param == "sqlite" else postgres_schema_url()
    for url in urls:
        with population.ingested(folder, url) as runtime:
            yield runtime


def page(
    runtime: Runtime, filters: dict[str, object], level: Level, sort: str | None, limit: int, offset: int
) -> Result:
    window = Page(level=level, sort=sort, limit=limit, offset=offset)
    with runtime.database.reading() as session:
        return run(session, CohortFilters(project="lung", **filters), window)  # type: ignore[arg-type]


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize("filters", FILTERS)
def test_pages_put_together_are_the_whole_answer(trial: Runtime, filters: dict[str, object], level: Level) -> None:
    for sort in SORTS if level is not Level.SUBJECT else [None, "-subject", "-series", "first_days"]:
        whole = page(trial, filters, level, sort, 1000, 0)
        assert whole.total == len(whole.rows)
        for limit in (1, 2, 3, 7):
            pages = [
                page(trial, filters, level, sort, limit, offset) for offset in range(0, whole.total + limit, limit)
            ]
            assert [row for p in pages for row in p.rows] == list(whole.rows), (sort, limit)
            again = [page(trial, filters, level, sort, limit, p.offset) for p in pages]  # from the kept tallies
            assert again == pages, (sort, limit)
            assert {p.total for p in pages} == {whole.total}
            assert pages[-1].rows == []  # past the end: no row, and still the total


def test_the_tally_names_the_subjects_holding_the_page(trial: Runtime) -> None:
    everything = CohortFilters(project="lung")

    def counted(limit: int = 20, offset: int = 0) -> tuple[int, str | None, str | None, int | None]:
        with trial.database.reading() as session:
            found = session.execute(tally(everything, Page(level=Level.SERIES, limit=limit, offset=offset), True))
            row = found.one()
        return int(row.total), row.first, row.last, row.before

    assert counted(3, 2) == (16, "LUNG-0001", "LUNG-0002", 0)  # subject 1 has 3 series
    assert counted(2, 3)[1:] == ("LUNG-0002", "LUNG-0002", 3)
    total, first, _, _ = counted(5, 16)
    assert (total, first) == (16, None)  # past the end: no subject holds it (the page's statement finds no row)
    with trial.database.reading() as session:
        unordered = session.execute(tally(everything, Page(level=Level.SERIES, offset=4), False)).one()
    assert unordered.total == 16 and "first" not in unordered._fields  # not ordered by subject: the total alone


def test_a_page_in_the_middle_of_a_subject_starts_where_its_rows_are(trial: Runtime) -> None:
    every = page(trial, {}, Level.SERIES, None, 1000, 0).rows
    for offset in range(len(every)):
        assert page(trial, {}, Level.SERIES, None, 1, offset).rows == [every[offset]]
