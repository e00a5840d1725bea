"""The writer of de-identified instances: the bytes it produces are the bytes pydicom would write."""

from __future__ import annotations

import copy
import io
import struct
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO, DicomFileLike
from pydicom.filewriter import dcmwrite, write_data_element, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from bridge.dicomio import _encoded, read_instance, write_instance
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


def pydicom_bytes(element: DataElement, syntax: str, encoding: str | list[str] = "ISO_IR 100") -> bytes:
    """The element as pydicom's encoder writes it in `syntax`."""
    encoder = DicomBytesIO()
    encoder.is_implicit_VR = syntax == ImplicitVRLittleEndian
    encoder.is_little_endian = syntax != ExplicitVRBigEndian
    write_data_element(encoder, element, encoding)
    return encoder.getvalue()


def ours(element: DataElement, syntax: str) -> bytes | None:
    return _encoded(element, implicit=syntax == ImplicitVRLittleEndian, little=syntax != ExplicitVRBigEndian)


def code_item(value: str, meaning: str, *, undefined: bool = False) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    item.is_undefined_length_sequence_item = undefined
    return item


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("encoding", ["ISO_IR 100", ["", "ISO 2022 IR 87"], "ISO_IR 192"])
def test_elements_this_module_encodes_are_the_bytes_pydicom_writes(syntax: str, encoding: str | list[str]) -> None:
    """Text, person names de-identification wrote, single numbers and sequences of plain text items (defined
    or undefined lengths), in every uncompressed syntax and under any character set."""
    undefined = DataElement(0x00400260, "SQ", Sequence([code_item("1", "A", undefined=True), code_item("22", "BB")]))
    undefined.is_undefined_length = True
    elements = [
        DataElement(0x00100010, "PN", "LUNG-0007"),  # odd length: padded
        DataElement(0x00081070, "PN", "ANONYMIZED"),
        DataElement(0x00080090, "PN", None),
        DataElement(0x00280010, "US", 512),
        DataElement(0x00280106, "SS", -3),
        DataElement(0x00189305, "UL", 70000),
        DataElement(0x00189306, "FL", 0.5),
        DataElement(0x00189307, "FD", 1.0 / 3),
        DataElement(0x00280011, "US", None),
        DataElement(0x00080018, "UI", "2.25.1234567"),
        DataElement(0x00080008, "CS", ["DERIVED", "SECONDARY"]),
        DataElement(0x00120064, "SQ", Sequence([code_item("113100", "Basic Application Confidentiality Profile")])),
        DataElement(0x00081110, "SQ", Sequence()),
        undefined,
    ]
    for element in elements:
        assert ours(element, syntax) == pydicom_bytes(element, syntax, encoding), element


def test_elements_this_module_leaves_to_pydicom(tmp_path: Path) -> None:
    """Names read from a file (pydicom writes their original bytes), non-ASCII text, several numbers,
    sequences of items that hold more than plain text."""
    ds = factory.make_ct(factory.make_patient(1))
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    read = read_instance(path)
    read_name = read["PatientName"]
    nested = Dataset()
    nested.ReferencedSOPSequence = Sequence([Dataset()])
    for element in [
        read_name,
        DataElement(0x00100010, "PN", "Müller^Jörg"),
        DataElement(0x00100010, "PN", "Yamada^Tarou=山田^太郎"),
        DataElement(0x00081030, "LO", "Thorax Müller"),
        DataElement(0x00280010, "US", [1, 2]),
        DataElement(0x00081115, "SQ", Sequence([nested])),
    ]:
        assert ours(element, ExplicitVRLittleEndian) is None, element


def test_plain_ascii_values_encode_alike_under_every_character_set() -> None:
    """What de-identification writes (subject code, dummies, method, pseudo UIDs, shifted dates) is plain
    ASCII, whose bytes no DICOM character set changes; checked against pydicom for each one it knows."""
    from pydicom.charset import python_encoding

    terms = [term for term in python_encoding if term]
    for charset in [[term] for term in terms] + [["", term] for term in terms]:
        for vr, value in [
            ("PN", "LUNG-0007"),
            ("PN", "ANONYMIZED"),
            ("LO", "pacs-bridge PS3.15 E.1-1 2024b"),
            ("SH", "ANONYMIZED"),
            ("LT", "Thorax ~ text"),
            ("UI", "2.25.123"),
            ("DA", ["20240101", "20240102"]),
        ]:
            element = DataElement(0x00100010 if vr == "PN" else 0x00081030, vr, value)
            encoded = ours(element, ExplicitVRLittleEndian)  # first: pydicom's encoder caches a name's bytes
            with warnings.catch_warnings():  # single ISO 2022 sets, code extensions that are none: same bytes
                warnings.simplefilter("ignore")
                assert encoded == pydicom_bytes(element, ExplicitVRLittleEndian, charset), (charset, vr)
