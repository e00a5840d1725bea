"""De-identification of whole instances: what leaves must carry no identifier and still be valid DICOM."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID_dictionary

from bridge.deid import values
from bridge.deid.deidentify import DeidContext, PrivateKeep, deidentify
from bridge.deid.identity import TrialAttributes
from bridge.deid.table import Option, Policy
from bridge.dicom.files import read_instance, write_instance
from tests import factory
from tests.conftest import dciodvfy_errors

KEY = b"k" * 32
DEFAULT_OPTIONS = frozenset(
    {Option.RETAIN_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS, Option.CLEAN_DESCRIPTORS}
)


def context(options: frozenset[Option] = DEFAULT_OPTIONS, offset: int = -100, **kw: object) -> DeidContext:
    return DeidContext(
        policy=Policy(options),
        key=KEY,
        subject_code="LUNG-0007",
        date_offset_days=offset,
        trial=TrialAttributes(sponsor_name="Onco Group", protocol_id="LUNG-1", site_name="Site A"),
        **kw,  # type: ignore[arg-type]
    )


def identifiers(ds: Dataset) -> list[str]:
    """Strings that must not survive: names, IDs, accession, birth date, institution, original UIDs."""
    found: list[str] = []
    patient = str(ds.PatientName)
    found += [part for part in patient.replace("=", "^").split("^") if len(part) >= 3]
    for keyword in (
        "PatientID",
        "AccessionNumber",
        "PatientBirthDate",
        "InstitutionName",
        "StationName",
        "DeviceSerialNumber",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "FrameOfReferenceUID",
        "ReferringPhysicianName",
        "OperatorsName",
        "StudyID",
    ):
        value = ds.get(keyword)
        if value:
            found.append(str(value))
    return found


def all_text(ds: Dataset) -> str:
    """Every value of every element at every depth, decoded, as one string."""
    parts: list[str] = []

    def visit(dataset: Dataset) -> None:
        for element in dataset:
            if element.VR == "SQ":
                for item in element.value:
                    visit(item)
            elif element.VR not in ("OB", "OW", "OF", "OD", "OL", "UN"):
                parts.append(str(element.value))

    visit(ds)
    if hasattr(ds, "file_meta"):
        visit(ds.file_meta)
    return "\n".join(parts)


def roundtrip(ds: Dataset, tmp_path: Path, name: str = "out.dcm") -> Path:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["CT", "MR", "PT", "SR", "SEG"])
def test_output_has_no_identifier_and_no_new_validator_error(kind: str, tmp_path: Path) -> None:
    patient = factory.make_patient(3)
    images = factory.make_series(patient, modality="CT", count=2)
    original = {
        "CT": lambda: images[0],
        "MR": lambda: factory.make_mr(patient),
        "PT": lambda: factory.make_pt(patient),
        "SR": lambda: factory.make_sr(patient, images),
        "SEG": lambda: factory.make_seg(images),
    }[kind]()
    before = dciodvfy_errors(roundtrip(original, tmp_path, "in.dcm"))
    secrets = identifiers(original)

    result = deidentify(copy.deepcopy(original), context())
    path = roundtrip(result.dataset, tmp_path)

    assert dciodvfy_errors(path) == before == []
    text = all_text(pydicom.dcmread(path))
    raw = path.read_bytes()
    for secret in secrets:
        assert secret not in text, f"{secret!r} survived de-identification"
        assert secret.encode("latin-1", "ignore") not in raw or len(secret) < 4
    out = pydicom.dcmread(path)
    assert out.PatientIdentityRemoved == "YES"
    assert out.PatientName == "LUNG-0007" and out.PatientID == "LUNG-0007"
    assert out.ClinicalTrialSubjectID == "LUNG-0007"
    assert out.ClinicalTrialSponsorName == "Onco Group"
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_pixel_data_is_never_changed() -> None:
    ds = factory.make_ct(factory.make_patient(1))
    pixels = bytes(ds.PixelData)
    result = deidentify(copy.deepcopy(ds), context())
    assert bytes(result.dataset.PixelData) == pixels


def test_dates_shift_by_the_subject_offset_at_every_depth_keeping_precision_and_zone() -> None:
    ds = factory.make_ct(factory.make_patient(1), study_date="20240105")
    ds.AcquisitionDateTime = "20240105083000.123+0100"
    item = Dataset()
    item.ObservationDateTime = "202401"
    item.Date = "20240301"
    ds.ContentSequence = Sequence([item])
    out = deidentify(ds, context(offset=-10)).dataset
    assert out.StudyDate == "20231226"
    assert out.AcquisitionDateTime == "20231226083000.123+0100"
    assert out.ContentSequence[0].ObservationDateTime == "202312"
    assert out.ContentSequence[0].Date == "20240220"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "PatientBirthDate" not in out or not out.PatientBirthDate


def test_full_dates_option_keeps_dates_and_says_so() -> None:
    ds = factory.make_ct(factory.make_patient(1), study_date="20240105")
    options = DEFAULT_OPTIONS - {Option.RETAIN_MODIFIED_DATES} | {Option.RETAIN_FULL_DATES}
    out = deidentify(ds, context(options)).dataset
    assert out.StudyDate == "20240105"
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"
    codes_applied = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert codes_applied == {"113100", "113106", "113108", "113105"}


def test_method_code_sequence_lists_exactly_the_options_applied() -> None:
    out = deidentify(factory.make_ct(factory.make_patient(1)), context()).dataset
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == [
        "113100",
        "113105",
        "113107",
        "113108",
    ]
    bare = deidentify(factory.make_ct(factory.make_patient(1)), context(frozenset())).dataset
    assert [item.CodeValue for item in bare.DeidentificationMethodCodeSequence] == ["113100"]
    assert bare.LongitudinalTemporalInformationModified == "REMOVED"
    assert bare.StudyDate in ("", None)


def test_uids_are_keyed_valid_consistent_and_references_follow() -> None:
    patient = factory.make_patient(2)
    first, second = factory.make_series(patient, count=2)
    second.ReferencedImageSequence = Sequence([Dataset()])
    second.ReferencedImageSequence[0].ReferencedSOPClassUID = first.SOPClassUID
    second.ReferencedImageSequence[0].ReferencedSOPInstanceUID = first.SOPInstanceUID
    original_first = str(first.SOPInstanceUID)

    out_first = deidentify(first, context()).dataset
    out_second = deidentify(second, context()).dataset

    assert out_second.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out_first.SOPInstanceUID
    assert out_second.ReferencedImageSequence[0].ReferencedSOPClassUID == first.SOPClassUID  # well-known
    assert out_first.StudyInstanceUID == out_second.StudyInstanceUID
    assert out_first.SOPInstanceUID == values.pseudo_uid(KEY, original_first)
    for uid in (out_first.SOPInstanceUID, out_first.StudyInstanceUID, out_first.FrameOfReferenceUID):
        assert len(uid) <= 64 and uid.startswith("2.25.") and uid not in UID_dictionary
        assert all(part == "0" or not part.startswith("0") for part in uid.split("."))
    assert out_first.SOPClassUID == pydicom.uid.CTImageStorage


def test_retain_uids_option_keeps_them() -> None:
    ds = factory.make_ct(factory.make_patient(1))
    study = str(ds.StudyInstanceUID)
    out = deidentify(ds, context(DEFAULT_OPTIONS | {Option.RETAIN_UIDS})).dataset
    assert out.StudyInstanceUID == study


def test_device_and_institution_identity_are_removed_unless_retained() -> None:
    ds = factory.make_ct(factory.make_patient(1))
    serial, institution = str(ds.DeviceSerialNumber), str(ds.InstitutionName)
    out = deidentify(copy.deepcopy(ds), context()).dataset
    assert out.DeviceSerialNumber != serial and out.InstitutionName != institution
    kept = deidentify(
        ds, context(DEFAULT_OPTIONS | {Option.RETAIN_DEVICE_IDENTITY, Option.RETAIN_INSTITUTION_IDENTITY})
    ).dataset
    assert kept.DeviceSerialNumber == serial and kept.InstitutionName == institution


def test_patient_characteristics_are_kept_only_with_the_option() -> None:
    ds = factory.make_ct(factory.make_patient(1))
    age, sex = ds.PatientAge, ds.PatientSex
    out = deidentify(copy.deepcopy(ds), context()).dataset
    assert (out.PatientAge, out.PatientSex) == (age, sex)
    bare = deidentify(ds, context(DEFAULT_OPTIONS - {Option.RETAIN_PATIENT_CHARACTERISTICS})).dataset
    assert "PatientAge" not in bare and not bare.get("PatientSex")


def test_descriptors_are_cleaned_of_identifiers_dates_and_ids() -> None:
    patient = factory.make_patient(1)
    ds = factory.make_ct(patient)
    family = str(ds.PatientName).split("^")[0]
    ds.StudyDescription = f"CT thorax {family} 2024-01-05 ref 8812345"
    ds.SeriesDescription = f"{ds.PatientID} follow-up"
    out = deidentify(ds, context()).dataset
    assert out.StudyDescription == "CT thorax ref"
    assert out.SeriesDescription == "follow-up"


def test_without_clean_descriptors_descriptions_are_removed() -> None:
    ds = factory.make_ct(factory.make_patient(1))
    out = deidentify(ds, context(DEFAULT_OPTIONS - {Option.CLEAN_DESCRIPTORS})).dataset
    assert "StudyDescription" not in out and "SeriesDescription" not in out


def test_private_unknown_overlay_and_history_are_removed(tmp_path: Path) -> None:
    ds = factory.with_private_tags(factory.make_ct(factory.make_patient(1)))
    ds.add_new(0x00431099, "LO", "unknown public-looking")  # odd group: private, no creator
    ds.add_new(0x00080099, "LO", "not in the dictionary")
    ds.OriginalAttributesSequence = Sequence([Dataset()])
    ds.OriginalAttributesSequence[0].AttributeModificationDateTime = "20240101"
    out = deidentify(ds, context()).dataset
    tags = set(out.keys())
    assert not any(tag.group & 1 for tag in tags)
    assert not any(0x6000 <= tag.group <= 0x601E for tag in tags)
    assert 0x00080099 not in tags and "OriginalAttributesSequence" not in out


def test_private_elements_kept_by_creator_and_element() -> None:
    ds = factory.with_private_tags(factory.make_ct(factory.make_patient(1)))
    block = ds.private_block(0x0009, factory.PRIVATE_CREATOR)
    kept_value = block[0x10].value
    keep = frozenset({PrivateKeep(factory.PRIVATE_CREATOR, 0x0009, 0x10)})
    out = deidentify(ds, context(keep_private=keep)).dataset
    out_block = out.private_block(0x0009, factory.PRIVATE_CREATOR)
    assert out_block[0x10].value == kept_value
    assert 0x01 not in out_block and 0x02 not in out_block


def test_sr_text_content_is_cleaned_and_stays_valid(tmp_path: Path) -> None:
    patient = factory.make_patient(4)
    images = factory.make_series(patient, count=1)
    sr = factory.make_sr(patient, images)
    family = str(sr.PatientName).split("^")[0]
    out = deidentify(sr, context()).dataset
    assert family not in all_text(out)
    assert dciodvfy_errors(roundtrip(out, tmp_path)) == []


@pytest.mark.parametrize("charset", ["ISO 2022 IR 87", "ISO_IR 192", "ISO_IR 100"])
def test_character_sets_round_trip(charset: str, tmp_path: Path) -> None:
    ds = factory.with_charset(factory.make_ct(factory.make_patient(5)), charset)
    name = str(ds.PatientName)
    ds.StudyDescription = f"Thorax {name.split('=')[-1].split('^')[0]}"
    path_in = roundtrip(ds, tmp_path, "in.dcm")
    original = pydicom.dcmread(path_in)

    out = deidentify(original, context()).dataset
    back = pydicom.dcmread(roundtrip(out, tmp_path))

    assert back.SpecificCharacterSet == original.SpecificCharacterSet
    assert back.PatientName == "LUNG-0007"
    assert back.StudyDescription == "Thorax"
    for part in name.replace("=", "^").split("^"):
        if part:
            assert part not in all_text(back)


def test_burned_in_and_identity_of_the_same_input_is_deterministic() -> None:
    ds = factory.make_ct(factory.make_patient(1))
    first = deidentify(copy.deepcopy(ds), context())
    second = deidentify(copy.deepcopy(ds), context())
    assert first.dataset == second.dataset
    assert first.uid_map == second.uid_map


def test_timepoint_label_is_taken_from_the_input_and_cleaned() -> None:
    ds = factory.make_ct(factory.make_patient(1))
    ds.ClinicalTrialTimePointID = "FU1 20240105"
    result = deidentify(ds, context())
    assert result.timepoint_label == "FU1"
    assert result.dataset.ClinicalTrialTimePointID == "FU1"


def _deidentified_bytes(source: Path, ctx: DeidContext, *, convert_first: bool) -> tuple[bytes, Dataset]:
    ds = read_instance(source)
    if convert_first:  # every element converted by pydicom: the walk then takes pydicom's way throughout
        for _ in ds.iterall():
            pass
        for _ in ds.file_meta:
            pass
    out = deidentify(ds, ctx).dataset
    written = io.BytesIO()
    write_instance(written, out, source)  # type: ignore[arg-type]
    return written.getvalue(), out


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("kind", ["CT", "SR", "SEG", "private", "japanese", "de-identified before"])
@pytest.mark.parametrize("options", [DEFAULT_OPTIONS, frozenset({Option.RETAIN_FULL_DATES})])
def test_raw_values_are_changed_as_pydicom_values_are(
    kind: str, syntax: str, options: frozenset[Option], tmp_path: Path
) -> None:
    """Plain text values are de-identified from their bytes, without pydicom's conversions: the output is
    byte for byte what the walk writes through pydicom."""
    patient = factory.make_patient(4)
    images = factory.make_series(patient, modality="CT", count=2)
    original = {
        "CT": lambda: images[0],
        "SR": lambda: factory.make_sr(patient, images),
        "SEG": lambda: factory.make_seg(images),
        "private": lambda: factory.with_private_tags(images[1]),
        "japanese": lambda: factory.with_charset(factory.make_ct(patient), "ISO 2022 IR 87"),
        "de-identified before": lambda: deidentify(copy.deepcopy(images[0]), context()).dataset,
    }[kind]()
    original.file_meta.TransferSyntaxUID = syntax
    source = tmp_path / "in.dcm"
    original.save_as(source, enforce_file_format=True)
    ctx = context(options, keep_private=frozenset({PrivateKeep(factory.PRIVATE_CREATOR, 0x0009, 0x01)}))

    fast, out = _deidentified_bytes(source, ctx, convert_first=False)
    slow, _ = _deidentified_bytes(source, ctx, convert_first=True)

    assert fast == slow
    kept_raw = out.get_item(BaseTag(0x0020000D), keep_deferred=True)  # the pseudo Study Instance UID
    assert isinstance(kept_raw, RawDataElement)  # the fast way was taken
