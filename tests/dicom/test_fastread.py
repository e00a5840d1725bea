"""The one-pass reader builds exactly the dataset pydicom's reader builds, or says it cannot (None)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from bridge.dicom.fastread import read_plain
from bridge.dicom.files import DEFER_SIZE, read_instance
from bridge.errors import MalformedInstance, Refused
from bridge.ingest.admission import CHECKED_TAGS, check_instance
from tests import factory

PATIENT = factory.make_patient(3)


def ct() -> Dataset:
    return factory.make_ct(PATIENT, rows=64, columns=64)


def undefined_lengths(ds: Dataset) -> Dataset:
    """Every sequence and item of undefined length (as many modalities write them)."""
    for element in ds.iterall():
        if element.VR == "SQ":
            element.is_undefined_length = True
            for item in element.value:
                item.is_undefined_length_sequence_item = True
    return ds


def with_large_private_value(ds: Dataset) -> Dataset:
    """A private value over the defer size before the pixel data: read later, from the file."""
    block = ds.private_block(0x0029, "BRIDGE TEST", create=True)
    block.add_new(0x10, "OB", bytes(range(256)) * (DEFER_SIZE // 256 + 1))
    return ds


def with_trailing_padding(ds: Dataset) -> Dataset:
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 16)
    return ds


def large_ct() -> Dataset:
    return factory.make_ct(PATIENT, rows=512, columns=512)  # pixel data over the defer size


def sr() -> Dataset:
    return factory.make_sr(PATIENT, factory.make_series(PATIENT, count=2))


def seg() -> Dataset:
    return factory.make_seg(factory.make_series(PATIENT, count=2))


def private() -> Dataset:
    return factory.with_private_tags(ct())


def japanese() -> Dataset:
    return factory.with_charset(ct(), "ISO 2022 IR 87")


PLAIN: dict[str, Callable[[], Dataset]] = {
    "ct": ct,
    "large ct": large_ct,
    "undefined lengths": lambda: undefined_lengths(ct()),
    "sr, undefined lengths": lambda: undefined_lengths(sr()),
    "sr": sr,
    "seg": seg,
    "private": private,
    "large private value": lambda: with_large_private_value(ct()),
    "trailing padding": lambda: with_trailing_padding(ct()),
    "japanese": japanese,
}


def write(ds: Dataset, path: Path, syntax: str = ExplicitVRLittleEndian) -> Path:
    ds = copy.deepcopy(ds)
    if syntax == RLELossless:
        ds.compress(RLELossless, generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = syntax
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def assert_same(ours: FileDataset, theirs: FileDataset) -> None:
    assert ours.preamble == theirs.preamble
    assert ours.file_meta == theirs.file_meta
    assert ours.filename == theirs.filename
    assert ours.original_encoding == theirs.original_encoding
    assert ours.original_character_set == theirs.original_character_set
    assert list(ours.keys()) == list(theirs.keys())
    for tag in theirs.keys():
        mine, reference = ours.get_item(tag, keep_deferred=True), theirs.get_item(tag, keep_deferred=True)
        if tag == 0x00080005 and isinstance(mine, RawDataElement):
            # pydicom converts the character set as it reads; this reader leaves it raw: the same value
            assert ours[tag].value == reference.value and mine.value_tell == reference.file_tell, tag
            continue
        assert type(mine) is type(reference), tag
        if isinstance(reference, RawDataElement):
            assert mine == reference, tag
        else:
            assert isinstance(mine, DataElement) and isinstance(reference, DataElement)
            assert (mine.VR, mine.file_tell, mine.is_undefined_length) == (
                reference.VR,
                reference.file_tell,
                reference.is_undefined_length,
            ), tag
            assert mine.value == reference.value, tag
    assert ours == theirs  # every value, deferred ones read from the file


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("kind", sorted(PLAIN))
def test_plain_files_are_read_as_pydicom_reads_them(tmp_path: Path, kind: str, syntax: str) -> None:
    path = write(PLAIN[kind](), tmp_path / "in.dcm", syntax)
    ours = read_plain(path, DEFER_SIZE)
    assert ours is not None, "a plain file: this reader must take it"
    assert_same(ours, dcmread(path, defer_size=DEFER_SIZE, force=True))


@pytest.mark.parametrize("syntax", [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, RLELossless])
def test_other_syntaxes_are_left_to_pydicom(tmp_path: Path, syntax: str) -> None:
    """Big endian, deflated, and encapsulated pixel data (undefined length outside a sequence)."""
    instance = ct()
    path = write(instance, tmp_path / "in.dcm", syntax)
    assert read_plain(path, DEFER_SIZE) is None
    assert read_instance(path).SOPInstanceUID == instance.SOPInstanceUID


def test_odd_files_are_left_to_pydicom(tmp_path: Path) -> None:
    """Truncated anywhere, no preamble, explicit VR in a file that says implicit, a broken sequence: pydicom
    gives the verdict (read_instance refuses the truncated ones as before)."""
    whole = write(ct(), tmp_path / "whole.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    for end in [*range(100, 2000, 7), len(whole) - 3000, len(whole) - 1]:
        cut.write_bytes(whole[:end])
        ours = read_plain(cut, DEFER_SIZE)
        if ours is not None:  # cut between two elements: a shorter dataset, read as pydicom reads it
            assert_same(ours, dcmread(cut, defer_size=DEFER_SIZE, force=True))
        else:
            with pytest.raises((MalformedInstance, Refused)), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom on values cut short
                check_instance(read_instance(cut))  # pydicom's verdict, as before this reader
    assert read_plain(tmp_path / "whole.dcm", DEFER_SIZE) is not None
    (tmp_path / "bare.dcm").write_bytes(whole[132:])
    assert read_plain(tmp_path / "bare.dcm", DEFER_SIZE) is None
    liar = write(ct(), tmp_path / "liar.dcm")  # explicit VR dataset, meta says implicit
    data = bytearray(liar.read_bytes())
    at = data.index(ExplicitVRLittleEndian.encode())
    data[at : at + len(ImplicitVRLittleEndian)] = ImplicitVRLittleEndian.encode()
    data[at + len(ImplicitVRLittleEndian) : at + len(ExplicitVRLittleEndian)] = b"\x00\x00"
    liar.write_bytes(bytes(data))
    assert read_plain(liar, DEFER_SIZE) is None
    broken = undefined_lengths(ct())
    broken.add_new(0x00081250, "SQ", Sequence([Dataset()]))  # last element: its delimiter is cut off
    broken[0x00081250].is_undefined_length = True
    data = write(broken, tmp_path / "broken.dcm").read_bytes()
    (tmp_path / "broken.dcm").write_bytes(data[: data.rindex(b"\xfe\xff\xdd\xe0")])
    assert read_plain(tmp_path / "broken.dcm", DEFER_SIZE) is None


def assert_kept(sparse: FileDataset, full: FileDataset, tags: frozenset[int]) -> None:
    """`sparse` is `full` without the elements outside `tags` (the character set is always kept)."""
    kept = [tag for tag in full.keys() if tag in tags or tag == 0x00080005]
    assert list(sparse.keys()) == kept
    assert sparse.file_meta == full.file_meta
    assert sparse.original_encoding == full.original_encoding
    for tag in kept:
        assert sparse.get_item(tag, keep_deferred=True) == full.get_item(tag, keep_deferred=True), tag


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("kind", sorted(PLAIN))
def test_a_read_of_some_tags_keeps_exactly_those_of_the_whole_read(tmp_path: Path, kind: str, syntax: str) -> None:
    path = write(PLAIN[kind](), tmp_path / "in.dcm", syntax)
    full = read_plain(path, DEFER_SIZE)
    sparse = read_plain(path, DEFER_SIZE, CHECKED_TAGS)
    assert full is not None and sparse is not None
    assert_kept(sparse, full, CHECKED_TAGS)
    # the undefined-length sequences are walked, not kept (one of them is, when asked for)
    sequences = frozenset(tag for tag in full.keys() if full.get_item(tag, keep_deferred=True).VR == "SQ")
    if sequences:
        one = read_plain(path, DEFER_SIZE, sequences)
        assert one is not None
        assert_kept(one, full, sequences)
        assert one == Dataset({tag: full[tag] for tag in one.keys()})


def test_a_read_of_some_tags_judges_the_whole_file(tmp_path: Path) -> None:
    """Cut anywhere: the admission check on the few tags the listener reads gives the verdict it gives on the
    whole dataset, and both readers refuse (leave to pydicom) the same files."""
    whole = write(large_ct(), tmp_path / "whole.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    for end in [*range(100, 2000, 7), *range(len(whole) - 2000, len(whole), 97), len(whole) - 1]:
        cut.write_bytes(whole[:end])
        full, sparse = read_plain(cut, DEFER_SIZE), read_plain(cut, DEFER_SIZE, CHECKED_TAGS)
        assert (full is None) == (sparse is None), end
        verdicts = []
        for tags in (None, CHECKED_TAGS):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # pydicom on values cut short
                    check_instance(read_instance(cut, tags))
                verdicts.append("admitted")
            except (MalformedInstance, Refused) as problem:
                verdicts.append(f"{type(problem).__name__}: {problem}")
        assert verdicts[0] == verdicts[1], end
        if full is not None and sparse is not None:
            assert_kept(sparse, full, CHECKED_TAGS)
    assert read_instance(tmp_path / "whole.dcm", CHECKED_TAGS).PixelData == large_ct().PixelData
