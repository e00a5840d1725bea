"""The one query model of the research side: what a data manager may ask of a project's index.

The CLI's options, the API's query parameters and a saved cohort's JSON are this one flat model. A series
matches when it and its timepoint pass every filter given; a timepoint matches when one of its series does;
a subject is in the cohort when its matching timepoints meet the counted conditions (`min_timepoints`, and
`min_followups` with a matching baseline). Later filters (e.g. "has an approved segmentation with label X")
are a field here and a clause in `bridge.cohorts.query.SERIES_CONDITIONS`.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CODE = r"^[A-Za-z0-9_.-]{1,64}$"
Count = Annotated[int, Field(ge=0, le=100000)]


class Level(StrEnum):
    SUBJECT = "subject"
    TIMEPOINT = "timepoint"
    SERIES = "series"


class FilterFields(BaseModel):
    """The filters (every one optional; lists mean any of), without the project: the API takes that from the
    URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: list[Annotated[str, Field(pattern=CODE)]] = []
    # timepoints
    label: list[Annotated[str, Field(max_length=64)]] = []
    timepoint_index: list[Count] = []  # 0 = baseline
    days_min: int | None = None
    days_max: int | None = None
    date_from: dt.date | None = None  # shifted study dates, as the index holds them
    date_to: dt.date | None = None
    # series
    modality: list[Annotated[str, Field(max_length=16)]] = []
    body_part: list[Annotated[str, Field(max_length=64)]] = []
    description: str | None = Field(default=None, max_length=64)  # case-insensitive contains
    slice_thickness_min: float | None = None
    slice_thickness_max: float | None = None
    pixel_spacing_min: float | None = None  # both in-plane spacings within the range
    pixel_spacing_max: float | None = None
    manufacturer: str | None = Field(default=None, max_length=64)  # case-insensitive contains
    model: str | None = Field(default=None, max_length=64)
    kernel: str | None = Field(default=None, max_length=64)
    contrast: str | None = Field(default=None, max_length=64)  # yes | no | text the agent contains
    min_instances: Count | None = None
    # annotations: the series has an approved segmentation with one of these labels (case-insensitive), final
    # or approved at `segmented_stage`
    segmented: list[Annotated[str, Field(max_length=64)]] = []
    segmented_stage: str | None = Field(default=None, max_length=32)
    # counted conditions, per subject, over its matching timepoints
    min_timepoints: Count | None = None
    min_followups: Count | None = None  # and a matching baseline

    @field_validator("subject", "label", "timepoint_index", "modality", "body_part", "segmented", mode="before")
    @classmethod
    def _one_is_a_list(cls, value: object) -> object:
        """A single value where a list is expected is a list of one (`"modality": "CT"`)."""
        return [value] if isinstance(value, str | int) else value

    @model_validator(mode="after")
    def _ranges(self) -> Self:
        for low, high in (
            ("days_min", "days_max"),
            ("date_from", "date_to"),
            ("slice_thickness_min", "slice_thickness_max"),
            ("pixel_spacing_min", "pixel_spacing_max"),
        ):
            start, end = getattr(self, low), getattr(self, high)
            if start is not None and end is not None and start > end:
                raise ValueError(f"{low} ({start}) is above {high} ({end})")
        return self


class CohortFilters(FilterFields):
    """Filters of one project's subjects, timepoints and series."""

    project: str = Field(pattern=CODE)

    def saved(self) -> str:
        """The filters as saved: JSON of what was given, without the defaults."""
        return self.model_dump_json(exclude_defaults=True)


class Page(BaseModel):
    """Which rows of a query's answer: the level, the order (`subject,-days_from_baseline`) and the window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Level = Level.SERIES
    sort: str | None = Field(default=None, max_length=256)
    limit: int = Field(default=100, ge=1, le=100000)
    offset: int = Field(default=0, ge=0)
