"""A small synthetic trial for the cohort tests: who should and should not be in "a baseline and at least two
follow-up chest CTs with slices of 2.5 mm or thinner", sent through the real ingest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from bridge.wiring import Runtime
from tests import factory
from tests.conftest import make_settings

VISITS = [
    {"label": "baseline", "from_day": 0, "to_day": 0},
    {"label": "week8", "from_day": 42, "to_day": 70},
    {"label": "week16", "from_day": 98, "to_day": 126},
]
PROJECT = {"subject_prefix": "LUNG", "visits": VISITS}


@dataclass(frozen=True)
class Scan:
    day: int  # from the subject's first study
    modality: str = "CT"
    body_part: str = "CHEST"
    thickness: float = 2.0


# subject number -> its scans; the comment says whether it is in the example cohort
TRIAL: dict[int, list[Scan]] = {
    1: [Scan(0), Scan(56), Scan(112, thickness=2.5)],  # in
    2: [Scan(0), Scan(56, thickness=5.0), Scan(112)],  # one thin follow-up only
    3: [Scan(0, "MR", thickness=3.0), Scan(56, thickness=1.0), Scan(112, thickness=1.0)],  # no CT baseline
    4: [Scan(0, thickness=1.25), Scan(60, thickness=1.25), Scan(200, thickness=1.25)],  # in (day 200 unscheduled)
    5: [Scan(0, body_part="ABDOMEN"), Scan(56, body_part="ABDOMEN"), Scan(112, body_part="ABDOMEN")],  # not chest
    6: [Scan(0)],  # baseline only
}
IN_EXAMPLE = {"LUNG-0001", "LUNG-0004"}  # when ingested one by one, in order (subject codes follow arrival)
EXAMPLE_TIMELINES = {(0, 56, 112), (0, 60, 200)}  # days from baseline of the two, whatever their codes


def timelines(rows: list[dict[str, object]]) -> dict[str, tuple[int, ...]]:
    """Subject -> the days from baseline of its timepoints, from timepoint-level rows (JSON)."""
    days: dict[str, list[int]] = {}
    for row in rows:
        days.setdefault(str(row["subject"]), []).append(int(row["days_from_baseline"]))  # type: ignore[call-overload]
    return {subject: tuple(sorted(found)) for subject, found in days.items()}


def subject_with_day(rows: list[dict[str, object]], day: int) -> str:
    return next(subject for subject, days in timelines(rows).items() if day in days)


FIRST_DAY = dt.date(2024, 1, 8)


def datasets(trial: dict[int, list[Scan]] = TRIAL, per_series: int = 2, marker: str = "") -> Iterator[Dataset]:
    """Every instance of the trial; `marker` is put into identifying attributes (the PHI-leak tests grep it)."""
    for number, scans in trial.items():
        patient = factory.make_patient(number)
        for scan in scans:
            day = (FIRST_DAY + dt.timedelta(days=scan.day + number)).strftime("%Y%m%d")
            extra = {"PatientName": f"{marker}^{number}", "InstitutionName": marker} if marker else {}
            yield from factory.make_series(
                patient,
                scan.modality,
                per_series,
                study_date=day,
                slice_thickness=scan.thickness,
                BodyPartExamined=scan.body_part,
                **extra,
            )


def write(folder: Path, **kw: object) -> list[Path]:
    return factory.write_files(datasets(**kw), folder)  # type: ignore[arg-type]


@contextmanager
def ingested(folder: Path, database_url: str) -> Iterator[Runtime]:
    """A runtime whose index holds the trial, ingested one instance after another (codes follow numbers)."""
    runtime = Runtime.start(make_settings(folder, database_url, lung=PROJECT))
    service = runtime.ingest("test")
    for path in write(folder / "in"):
        service.ingest(path, project="lung", source="test")
    try:
        yield runtime
    finally:
        runtime.close()
