"""The writer of de-identified instances: the bytes it produces are the bytes pydicom would write."""

from __future__ import annotations

import copy
import io
import struct
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import dcmwrite, write_file_meta_info
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from bridge.dicomio import read_instance, write_instance
from tests import factory


def body(part10: bytes) -> bytes:
    """The dataset after the file meta information (whose group length is its first element's value)."""
    assert part10[128:132] == b"DICM"
    return part10[144 + struct.unpack("<L", part10[140:144])[0] :]


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_changed_elements_are_written_as_pydicom_writes_them(tmp_path: Path, syntax: str) -> None:
    ds = factory.make_ct(factory.make_patient(1), rows=64, columns=64)
    ds.file_meta.TransferSyntaxUID = syntax
    source = tmp_path / "source.dcm"
    dcmwrite(
        source,
        ds,
        enforce_file_format=True,
        little_endian=syntax != ExplicitVRBigEndian,
        implicit_vr=syntax == ImplicitVRLittleEndian,
    )
    changed = read_instance(source)
    changed.SOPInstanceUID = "2.25.1234567"  # odd length: padded with NUL
    changed.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]  # several values
    changed.StudyDate = "20240105"
    changed.StudyDescription = "CT THORAX"  # odd length: padded with a space
    changed.AccessionNumber = ""  # empty
    changed.ReferringPhysicianName = "Müller^Jörg"  # not ASCII: pydicom's encoder and character set
    changed.SpecificCharacterSet = "ISO_IR 100"
    changed.PatientComments = "line one\r\nline two"

    ours = io.BytesIO()
    write_instance(ours, changed, source)
    theirs = io.BytesIO()
    dcmwrite(theirs, changed, enforce_file_format=True)

    assert body(ours.getvalue()) == body(theirs.getvalue())
    meta = io.BytesIO()
    write_file_meta_info(DicomFileLike(meta), copy.deepcopy(changed.file_meta), enforce_standard=True)
    assert ours.getvalue()[132 : 132 + len(meta.getvalue())] == meta.getvalue()
    back = dcmread(io.BytesIO(ours.getvalue()))
    assert back.SOPInstanceUID == "2.25.1234567" and list(back.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert back.ReferringPhysicianName == "Müller^Jörg" and back.StudyDescription == "CT THORAX"
