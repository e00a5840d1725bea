"""The pieces of DICOMweb answers built without a server: WADO-RS bodies read in blocks (files sharing a
block, a file spanning several, re-encoded parts, a file replaced while it is sent) and QIDO-RS rows as
DICOM JSON (each cell as `element(dicom_values(...))` gives it), written, then read back and compared."""

from __future__ import annotations

import datetime as dt
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from bridge.dicom.multipart import closing, part_header
from bridge.dicomweb import wado
from bridge.dicomweb.dicomjson import element, search_results
from bridge.search.attributes import ATTRIBUTES, Level
from bridge.search.query import Found, dicom_values
from tests import factory


def _files(folder: Path, sizes: list[int]) -> list[Path]:
    paths = []
    for number, size in enumerate(sizes):
        path = folder / f"{number}.dcm"
        path.write_bytes(bytes((number + i) % 251 for i in range(size)))
        paths.append(path)
    return paths


@pytest.mark.parametrize("sizes", [[10, 20, 30], [100, 5, 64, 64, 1], [300], [0, 7]])
def test_blocks_carry_every_byte_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sizes: list[int]) -> None:
    monkeypatch.setattr(wado, "CHUNK", 64)  # files share blocks, span them, or fill them exactly
    syntax = str(ExplicitVRLittleEndian)
    parts = [
        wado._part(part_header("b", "application/dicom", first=n == 0), path, syntax, syntax)
        for n, path in enumerate(_files(tmp_path, sizes))
    ]
    blocks = [bytes(block) for block in wado._blocks(parts, closing("b"))]
    expected = b"".join(part.header + part.path.read_bytes() for part in parts) + closing("b")
    assert b"".join(blocks) == expected
    assert all(len(block) <= 64 for block in blocks[:-1])
    assert sum(len(part.header) + (part.size or 0) for part in parts) + len(closing("b")) == len(expected)


def test_blocks_re_encode_what_is_not_sent_as_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wado, "CHUNK", 256)  # the re-encoded file is larger than a block
    ds = factory.make_ct(factory.make_patient(1), transfer_syntax=ImplicitVRLittleEndian)
    path = tmp_path / "implicit.dcm"
    ds.save_as(path, enforce_file_format=True)
    part = wado._part(b"HEAD", path, str(ImplicitVRLittleEndian), str(ExplicitVRLittleEndian))
    assert part.size is None  # its length is known only once encoded: no Content-Length
    body = b"".join(bytes(block) for block in wado._blocks([part], b"END"))
    assert body.startswith(b"HEAD") and body.endswith(b"END")
    again = pydicom.dcmread(BytesIO(body[4:-3]))
    assert again.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and again.SOPInstanceUID == ds.SOPInstanceUID


def test_a_file_replaced_after_the_answer_began_stops_the_stream(tmp_path: Path) -> None:
    syntax = str(ExplicitVRLittleEndian)
    (path,) = _files(tmp_path, [40])
    part = wado._part(b"", path, syntax, syntax)
    path.write_bytes(b"shorter")  # the announced Content-Length would be wrong
    with pytest.raises(OSError, match="changed"):
        b"".join(wado._blocks([part], b""))


def test_search_rows_as_element_of_dicom_values() -> None:
    attributes = ATTRIBUTES[Level.SERIES]
    samples = {
        "DA": [dt.date(2019, 3, 4), None],
        "PN": ["SUBJ-1", ""],
        "IS": [12, None],
        "DS": [2.5, None],
        "CS": ["CT,PT", ""],
    }
    rows = [
        tuple(samples.get(a.vr, ["text", None])[pick] if a.column is not None else None for a in attributes)
        for pick in (0, 1)
    ]
    found = Found(attributes=attributes, rows=rows, truncated=False)
    results = search_results(found, lambda row: {"00081190": element(0x00081190, "UR", [row["SeriesInstanceUID"]])})
    for row, result in zip(rows, results, strict=True):
        expected = {
            f"{a.tag:08X}": element(a.tag, a.vr, dicom_values(a, v)) for a, v in zip(attributes, row, strict=True)
        }
        url = dict(zip((a.keyword for a in attributes), row, strict=True))["SeriesInstanceUID"]
        expected["00081190"] = element(0x00081190, "UR", [url])
        assert result == expected and list(result) == sorted(expected)
    assert results[0]["00080020"] == {"vr": "DA", "Value": ["20190304"]}
    assert results[0]["00080061"] == {"vr": "CS", "Value": ["CT", "PT"]}
    assert results[0]["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "SUBJ-1"}]}
    assert results[1]["00100010"] == {"vr": "PN"}
