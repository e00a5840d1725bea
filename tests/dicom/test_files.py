"""The writer of de-identified instances: the bytes it produces are the bytes pydicom would write."""

from __future__ import annotations

import copy
import io
import struct
import warnings
from pathlib import Path

import pydicom.config
import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO, DicomFileLike
from pydicom.filewriter import dcmwrite, write_data_element, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from bridge.dicom.elements import number_of, plain_text, text_of
from bridge.dicom.encoding import encoded_element, text_element
from bridge.dicom.files import read_instance, write_instance
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
    return encoded_element(element, implicit=syntax == ImplicitVRLittleEndian, little=syntax != ExplicitVRBigEndian)


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


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the service runs pydicom: values are not validated (odd values for a VR are the point here)."""
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.IGNORE)
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)


PLAIN_VALUES = [
    b"",
    b"CT",
    b"CT ",
    b"1.2.840.10008.5.1.4.1.1.2\x00",
    b"1.2.3 ",
    b"  LEADING",
    b"TRAILING \x00",
    b"\x00\x00",
    b"  ",
    b"A\\B",  # several values
    b"M\xfcller ",  # not ASCII
    b"\x1b$B\x00",  # an escape sequence
    b"line one\r\nline two ",
]


@pytest.mark.parametrize("vr", "AS CS DA DT LO LT SH ST TM UC UI UT PN AE DS".split())
@pytest.mark.parametrize("value", PLAIN_VALUES)
@pytest.mark.parametrize("charset", [None, "ISO_IR 100", ["", "ISO 2022 IR 87"], "ISO_IR 192"])
@pytest.mark.usefixtures("lenient")
def test_plain_text_is_what_pydicom_converts_or_nothing(vr: str, value: bytes, charset: object) -> None:
    """The text read from the raw bytes is pydicom's converted value, or None: never a different value."""
    tag = BaseTag(0x00081030)
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    text = plain_text(ds.get_item(tag, keep_deferred=True), vr)
    if text is not None:
        assert text_of(ds, tag) == text  # from the raw bytes: the element stays raw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's complaints about undecodable bytes
        converted = ds[tag].value
    if text is not None:
        assert text == (str(converted) if converted else "")
    else:
        assert vr not in ("CS", "LO", "UI") or not value.isascii() or b"\\" in value or b"\x1b" in value
    assert text_of(ds, tag) == (str(converted) if converted else "")


@pytest.mark.parametrize("little", [True, False])
def test_number_of_reads_one_unsigned_short_as_pydicom_does(little: bool) -> None:
    ds = Dataset()
    rows, bits = BaseTag(0x00280010), BaseTag(0x00280100)
    ds[rows] = RawDataElement(rows, "US", 2, struct.pack("<H" if little else ">H", 512), 0, False, little)
    ds[bits] = RawDataElement(bits, None, 2, struct.pack("<H" if little else ">H", 16), 0, True, little)
    assert number_of(ds, rows) == 512 == ds[rows].value
    assert number_of(ds, bits) == 16 == ds[bits].value
    assert number_of(ds, BaseTag(0x00280011)) is None


@pytest.mark.parametrize("vr", ["UI", "LO", "SH", "CS", "DA", "PN", "LT"])
@pytest.mark.parametrize("text", ["", "A", "AB", "1.2.3", "LUNG-0007", "ANONYMIZED"])
@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
@pytest.mark.usefixtures("lenient")
def test_text_elements_are_the_bytes_pydicom_writes(vr: str, text: str, syntax: str) -> None:
    tag = BaseTag(0x00100020)
    raw = text_element(tag, vr, text, implicit=syntax == ImplicitVRLittleEndian, little=True)
    assert raw is not None
    assert ours(raw, syntax) == pydicom_bytes(DataElement(tag, vr, text or None), syntax)  # type: ignore[arg-type]
    assert text_element(tag, vr, "Müller", implicit=False, little=True) is None
    assert vr != "PN" or text_element(tag, vr, "Doe^John", implicit=False, little=True) is None
