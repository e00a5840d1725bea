"""The keyword -> column map: every column it names exists in its table, and it reads what pydicom reads."""

from __future__ import annotations

import datetime as dt

import pytest

from bridge.ingest.fields import FIELDS, Level, column_of, row_values
from storage.models.research import Instance, Series, Subject, Timepoint
from tests import factory

TABLES = {Level.SUBJECT: Subject, Level.TIMEPOINT: Timepoint, Level.SERIES: Series, Level.INSTANCE: Instance}


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f"{f.level}.{f.column}")
def test_every_mapped_column_exists_in_its_table(field: object) -> None:
    assert field.column in TABLES[field.level].model_fields  # type: ignore[attr-defined]


def test_a_ct_series_row_is_what_its_attributes_say() -> None:
    ds = factory.make_ct(factory.make_patient(1))
    values = row_values(ds, Level.SERIES)
    assert values["series_uid"] == ds.SeriesInstanceUID and values["modality"] == "CT"
    assert values["slice_thickness"] == float(ds.SliceThickness)
    assert (values["pixel_spacing_row"], values["pixel_spacing_col"]) == tuple(float(v) for v in ds.PixelSpacing)
    assert values["series_number"] == int(ds.SeriesNumber)
    timepoint = row_values(ds, Level.TIMEPOINT)
    assert timepoint["study_date"] == dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
    assert timepoint["study_uid"] == ds.StudyInstanceUID


def test_an_enhanced_instance_is_read_from_its_shared_functional_groups() -> None:
    images = factory.make_series(factory.make_patient(2), count=3)
    seg = factory.make_seg(images)
    assert "PixelSpacing" not in seg and "SliceThickness" not in seg
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    values = row_values(seg, Level.SERIES)
    assert values["pixel_spacing_row"] == float(measures.PixelSpacing[0])
    assert values["slice_thickness"] == float(measures.SliceThickness)


def test_queries_find_the_column_of_a_keyword() -> None:
    assert column_of("BodyPartExamined", Level.SERIES) == "body_part"
    assert column_of("StudyDescription", Level.TIMEPOINT) == "description"
    assert column_of("PixelSpacing", Level.SERIES) == "pixel_spacing_row"
    assert column_of("PatientName", Level.SUBJECT) is None
