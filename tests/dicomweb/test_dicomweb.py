"""DICOMweb of a real `serve` process, fed over C-STORE by DCMTK, read by dicomweb-client and plain HTTP:
QIDO-RS matching and paging, WADO-RS instances, metadata, frames and transfer syntaxes, STOW-RS into the
ingest with its statuses, tokens (bearer and basic), CORS, and no identifier or original UID in any answer."""

from __future__ import annotations

import base64
from io import BytesIO

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, generate_uid

from tests import factory
from tests.dicomweb.served import ORIGIN, Served, user_token, value

pytestmark = pytest.mark.integration


def studies_of(served: Served, **filters: str) -> list[dict]:  # type: ignore[type-arg]
    return served.client().search_for_studies(search_filters=filters or None)


def test_qido_studies_answer_from_the_index(served: Served) -> None:
    studies = studies_of(served)
    assert len(studies) == 3
    by_subject: dict[object, list[dict]] = {}  # type: ignore[type-arg]
    for study in studies:
        by_subject.setdefault(value(study, "PatientID"), []).append(study)
    assert sorted(by_subject) == ["OPEN-0001", "OPEN-0002"]
    first = {value(s, "NumberOfStudyRelatedSeries"): s for s in by_subject["OPEN-0001"]}
    baseline, followup = first[3], first[1]  # two CT series and the SEG; the MR series
    assert value(baseline, "NumberOfStudyRelatedInstances") == 7
    assert baseline["00080061"]["Value"] == ["CT", "SEG"]
    assert value(baseline, "PatientName") == {"Alphabetic": "OPEN-0001"}
    assert "Value" not in baseline["00080050"]  # accession number: there, empty
    assert value(baseline, "StudyDate") != "20240105"  # shifted
    assert str(value(baseline, "RetrieveURL")).endswith(
        f"/dicomweb/projects/open/studies/{value(baseline, 'StudyInstanceUID')}"
    )
    assert value(followup, "ModalitiesInStudy") == "MR"


def test_qido_matching(served: Served) -> None:
    everything = studies_of(served)
    uids = [str(value(s, "StudyInstanceUID")) for s in everything]
    dates = sorted(str(value(s, "StudyDate")) for s in everything)
    assert len(studies_of(served, PatientID="OPEN-0001")) == 2
    assert len(studies_of(served, PatientID="OPEN-000?")) == 3
    assert len(studies_of(served, PatientName="open-*")) == 3  # names match case-insensitively
    assert len(studies_of(served, ModalitiesInStudy="SEG")) == 1
    assert len(studies_of(served, ModalitiesInStudy="MR\\SEG")) == 2
    assert len(studies_of(served, Modality="SEG")) == 1  # OHIF asks Modality at study level
    assert len(studies_of(served, PatientID="*PEN-000*")) == 3
    assert len(studies_of(served, StudyInstanceUID=",".join(uids[:2]))) == 2
    assert len(studies_of(served, **{"0020000D": "\\".join(uids[1:])})) == 2
    assert len(studies_of(served, StudyDate=f"{dates[1]}-")) == 2
    assert len(studies_of(served, StudyDate=f"-{dates[0]}")) == 1
    assert len(studies_of(served, StudyDate=f"{dates[0]}-{dates[1]}")) == 2
    assert studies_of(served, AccessionNumber="A*") == []  # de-identified: no study has one
    bad = served.call("GET", "/dicomweb/studies?StudyDate=yesterday")
    assert bad.status_code == 400 and "StudyDate" in bad.json()["detail"] and "yesterday" not in bad.text
    unknown = served.call("GET", "/dicomweb/studies?SOPInstanceUID=1.2")  # an instance key at study level
    assert unknown.status_code == 400 and "SOPInstanceUID" in unknown.json()["detail"]
    typed = served.call("GET", "/dicomweb/studies?DOE%5EJOHN=1")  # a name typed as a key: never echoed
    assert typed.status_code == 400 and "DOE" not in typed.text


def test_qido_paging_includefield_and_warnings(served: Served) -> None:
    page = served.call("GET", "/dicomweb/projects/open/studies?limit=2&offset=0")
    assert page.status_code == 200 and page.headers["content-type"] == "application/dicom+json"
    assert len(page.json()) == 2
    assert page.headers["warning"].endswith('"There are additional results that can be requested"')
    rest = served.call("GET", "/dicomweb/projects/open/studies?limit=2&offset=2")
    assert len(rest.json()) == 1 and "warning" not in rest.headers
    assert {value(s, "StudyInstanceUID") for s in page.json() + rest.json()} == {
        value(s, "StudyInstanceUID") for s in studies_of(served)
    }
    capped = served.call("GET", "/dicomweb/projects/open/instances?limit=500")  # capped at 50
    assert len(capped.json()) == 11 and "warning" not in capped.headers
    fuzzy = served.call("GET", "/dicomweb/studies?fuzzymatching=true&PatientName=OPEN*")
    assert "fuzzymatching" in fuzzy.headers["warning"] and len(fuzzy.json()) == 3
    # what OHIF's study list sends: one comma-joined includefield
    ohif = served.call("GET", "/dicomweb/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030,00080060")
    assert ohif.status_code == 200 and "warning" not in ohif.headers
    full = served.call("GET", "/dicomweb/projects/open/series?includefield=all&Modality=CT")
    assert len(full.json()) == 3
    assert all("00180050" in s and "00100020" in s and "0020000D" in s for s in full.json())
    chosen = served.call("GET", "/dicomweb/projects/open/series?includefield=SliceThickness&includefield=00080070")
    assert all("00180050" in s and "00080070" in s and "00181210" not in s for s in chosen.json())


def test_qido_series_and_instances(served: Served) -> None:
    client = served.client()
    baseline = next(s for s in studies_of(served) if value(s, "NumberOfStudyRelatedSeries") == 3)
    study_uid = str(value(baseline, "StudyInstanceUID"))
    series = client.search_for_series(study_uid)
    assert sorted(str(value(s, "Modality")) for s in series) == ["CT", "CT", "SEG"]
    ct = next(s for s in series if value(s, "SeriesNumber") == 1)
    instances = client.search_for_instances(study_uid, str(value(ct, "SeriesInstanceUID")))
    assert [value(i, "InstanceNumber") for i in instances] == [1, 2, 3]
    assert all(value(i, "Rows") == 64 and value(i, "Columns") == 64 for i in instances)
    seg = client.search_for_instances(search_filters={"Modality": "SEG"})
    assert len(seg) == 1 and value(seg[0], "NumberOfFrames") == 3 and value(seg[0], "BitsAllocated") == 1
    assert len(client.search_for_series(search_filters={"StudyDate": f"{value(baseline, 'StudyDate')}"})) == 3


def test_tokens_scope_every_base(served: Served) -> None:
    assert served.call("GET", "/dicomweb/studies", user=None).status_code == 401
    assert 'Basic realm="pacs-bridge"' in served.call("GET", "/dicomweb/studies", user=None).headers["www-authenticate"]
    assert served.call("GET", "/dicomweb/projects/open/studies", user="outsider").status_code == 403
    assert served.call("GET", "/dicomweb/studies", user="outsider").json() == []  # sees only its project
    study = str(value(studies_of(served)[0], "StudyInstanceUID"))
    assert served.call("GET", f"/dicomweb/studies/{study}", user="outsider").status_code == 404
    assert served.call("GET", "/dicomweb/projects/nowhere/studies", user="outsider").status_code == 403
    basic = base64.b64encode(f"reader:{served.tokens['reader']}".encode()).decode()
    assert (
        served.call("GET", "/dicomweb/studies", user=None, headers={"Authorization": f"Basic {basic}"}).status_code
        == 200
    )
    wrong = base64.b64encode(f"outsider:{served.tokens['reader']}".encode()).decode()
    assert (
        served.call("GET", "/dicomweb/studies", user=None, headers={"Authorization": f"Basic {wrong}"}).status_code
        == 401
    )


def test_point_lookups_answer_as_searches_do_and_refusals_stay_audited(served: Served) -> None:
    """Searches for one patient or one study's series are answered on the event loop (the others in a worker
    thread): the same rows, and a caller without the right is still refused and audited."""
    everything = studies_of(served)
    patient = str(value(everything[0], "PatientID"))
    by_patient = served.call("GET", "/dicomweb/projects/open/studies", params={"PatientID": patient})
    assert by_patient.status_code == 200
    expected = {value(s, "StudyInstanceUID") for s in everything if value(s, "PatientID") == patient}
    assert {value(s, "StudyInstanceUID") for s in by_patient.json()} == expected and len(expected) >= 2
    study = str(value(everything[0], "StudyInstanceUID"))
    series = served.call("GET", f"/dicomweb/projects/open/studies/{study}/series")
    assert series.status_code == 200
    assert sorted(map(str, (value(s, "SeriesInstanceUID") for s in series.json()))) == sorted(
        str(value(s, "SeriesInstanceUID")) for s in served.client().search_for_series(study_instance_uid=study)
    )
    assert served.call("GET", "/dicomweb/studies", params={"PatientID": patient}, user="outsider").json() == []

    admin = user_token(served.bridge.config, "auditor", "--role", "admin")
    denied_before = _denials(served, admin)
    refused = [
        served.call("GET", "/dicomweb/projects/open/studies", params={"PatientID": patient}, user="outsider"),
        served.call("GET", f"/dicomweb/projects/open/studies/{study}/series", user=None),
        served.call(
            "GET",
            "/dicomweb/studies",
            params={"PatientID": patient},
            user=None,
            headers={"Authorization": "Bearer pb_nonsense"},
        ),
    ]
    assert [answer.status_code for answer in refused] == [403, 401, 401]
    assert _denials(served, admin) == denied_before + 3


def _denials(served: Served, admin: str) -> int:
    answer = httpx.get(
        f"{served.base}/api/v1/audit",
        params={"action": "api.denied", "limit": 1000},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return len(answer.json())


def test_cors_for_the_configured_origin(served: Served) -> None:
    preflight = served.call(
        "OPTIONS",
        "/dicomweb/studies",
        user=None,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
    answer = served.call("GET", "/dicomweb/studies?limit=1", headers={"Origin": ORIGIN})
    assert (
        answer.headers["access-control-allow-origin"] == ORIGIN
        and "Warning" in answer.headers["access-control-expose-headers"]
    )
    other = served.call(
        "OPTIONS",
        "/dicomweb/studies",
        user=None,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in other.headers


def _study(served: Served, modality: str) -> str:
    return str(
        value(served.client().search_for_studies(search_filters={"ModalitiesInStudy": modality})[0], "StudyInstanceUID")
    )


def test_wado_retrieves_what_is_stored_de_identified(served: Served) -> None:
    client = served.client()
    study_uid = _study(served, "SEG")
    datasets = client.retrieve_study(study_uid)
    assert len(datasets) == 7
    assert {ds.PatientID for ds in datasets} == {"OPEN-0001"} and {ds.StudyInstanceUID for ds in datasets} == {
        study_uid
    }
    series = client.search_for_series(study_uid, search_filters={"Modality": "CT", "SeriesNumber": "2"})
    series_uid = str(value(series[0], "SeriesInstanceUID"))
    assert [int(ds.InstanceNumber) for ds in client.retrieve_series(study_uid, series_uid)] == [1, 2, 3]
    instance_uid = str(value(client.search_for_instances(study_uid, series_uid)[0], "SOPInstanceUID"))
    one = client.retrieve_instance(study_uid, series_uid, instance_uid)
    assert one.SOPInstanceUID == instance_uid and one.pixel_array.shape == (64, 64)
    single = served.call(
        "GET",
        f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}",
        headers={"Accept": "application/dicom"},
    )
    assert (
        single.headers["content-type"].startswith("application/dicom")
        and pydicom.dcmread(BytesIO(single.content)).SOPInstanceUID == instance_uid
    )
    assert served.call("GET", f"/dicomweb/studies/{generate_uid()}").status_code == 404


def test_wado_transfer_syntaxes(served: Served) -> None:
    client = served.client()
    mr_study = _study(served, "MR")
    default = client.retrieve_study(mr_study)  # no syntax named: Explicit VR Little Endian, the default
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in default} == {ExplicitVRLittleEndian}
    stored = client.retrieve_study(mr_study, media_types=(("application/dicom", "*"),))
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in stored} == {ImplicitVRLittleEndian}
    assert all(np.array_equal(a.pixel_array, b.pixel_array) for a, b in zip(default, stored, strict=True))
    rle_study = next(str(value(s, "StudyInstanceUID")) for s in studies_of(served, PatientID="OPEN-0002"))
    as_stored = client.retrieve_study(rle_study, media_types=(("application/dicom", "*"),))
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in as_stored} == {RLELossless}
    refused = served.call(
        "GET",
        f"/dicomweb/studies/{rle_study}",
        headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ExplicitVRLittleEndian}'},
    )
    assert refused.status_code == 406 and RLELossless in refused.json()["detail"]


def test_wado_metadata_frames_and_bulkdata(served: Served) -> None:
    client = served.client()
    study_uid = _study(served, "SEG")
    metadata = client.retrieve_study_metadata(study_uid)
    assert len(metadata) == 7
    ct = next(m for m in metadata if value(m, "Modality") == "CT")
    series_uid, instance_uid = str(value(ct, "SeriesInstanceUID")), str(value(ct, "SOPInstanceUID"))
    pixel = ct["7FE00010"]
    assert pixel["vr"] == "OW" and "InlineBinary" not in pixel
    assert pixel["BulkDataURI"].startswith(f"{served.base}/dicomweb/projects/open/studies/{study_uid}/")
    stored = client.retrieve_instance(study_uid, series_uid, instance_uid)
    (frame,) = client.retrieve_instance_frames(study_uid, series_uid, instance_uid, frame_numbers=[1])
    assert frame == stored.PixelData
    (bulk,) = client.retrieve_bulkdata(pixel["BulkDataURI"])
    assert bulk == stored.PixelData
    assert client.retrieve_series_metadata(study_uid, series_uid)[0]["00080018"]["Value"][0] in {
        value(m, "SOPInstanceUID") for m in metadata
    }
    seg = next(m for m in metadata if value(m, "Modality") == "SEG")
    seg_series, seg_uid = str(value(seg, "SeriesInstanceUID")), str(value(seg, "SOPInstanceUID"))
    frames = client.retrieve_instance_frames(study_uid, seg_series, seg_uid, frame_numbers=[1, 3])
    whole = client.retrieve_instance(study_uid, seg_series, seg_uid).pixel_array  # (frames, rows, columns) of 0/1
    for got, number in zip(frames, (1, 3), strict=True):
        unpacked = np.unpackbits(np.frombuffer(got, np.uint8), bitorder="little")[: 64 * 64].reshape(64, 64)
        assert np.array_equal(unpacked, whole[number - 1])
    path = f"/dicomweb/projects/open/studies/{study_uid}/series/{seg_series}/instances/{seg_uid}/frames/4"
    assert served.call("GET", path).status_code == 404
    assert served.call("GET", path.replace("/4", "/0,x")).status_code == 400
    rle_study = next(str(value(s, "StudyInstanceUID")) for s in studies_of(served, PatientID="OPEN-0002"))
    rle = client.search_for_instances(rle_study)[0]
    rle_series, rle_uid = value(rle, "SeriesInstanceUID"), value(rle, "SOPInstanceUID")
    frames_path = f"/dicomweb/studies/{rle_study}/series/{rle_series}/instances/{rle_uid}/frames/1"
    assert served.call("GET", frames_path).status_code == 406  # compressed, never decompressed here
    as_stored = served.call(
        "GET", frames_path, headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    )
    assert as_stored.status_code == 200 and f"transfer-syntax={RLELossless}" in as_stored.text[:400]


def _stow(
    served: Served,
    datasets: list[Dataset],
    path: str = "/dicomweb/projects/open/studies",
    user: str = "annotator",
    garbage: bytes | None = None,
) -> httpx.Response:
    boundary = "stow-test-boundary"
    body = b""
    for ds in datasets:
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + out.getvalue() + b"\r\n"
    if garbage is not None:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + garbage + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return served.call("POST", path, user=user, content=body, headers={"Content-Type": content_type})


def test_stow_goes_into_the_ingest(served: Served) -> None:
    patient = factory.make_patient(3)
    series = factory.make_series(patient, "CT", 2, study_date="20240601")
    before = served.bridge.status()["open"]["instances"]
    stored = served.client(user="annotator").store_instances(series)
    assert len(stored.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in stored
    served.bridge.wait_for("open", before + 2)
    url = stored.ReferencedSOPSequence[0].RetrieveURL
    fetched = httpx.get(url, headers={"Authorization": f"Bearer {served.tokens['reader']}"}, timeout=30)
    assert fetched.status_code == 200
    uid = stored.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert uid != series[0].SOPInstanceUID and uid in url  # the de-identified UID the bridge serves it under
    assert served.call("GET", url.removeprefix(served.base)).status_code == 200


def test_stow_statuses_and_refusals(served: Served) -> None:
    patient = factory.make_patient(4)
    good = factory.make_series(patient, "CT", 1, study_date="20240602")
    quarantined = served.bridge.status()["open"].get("quarantined", 0)
    mixed = _stow(served, good, garbage=b"\0" * 128 + b"DICM" + b"not a dataset")
    assert mixed.status_code == 202 and mixed.headers["content-type"] == "application/dicom+json"
    body = mixed.json()
    assert len(body["00081199"]["Value"]) == 1 and body["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    wrong_study = _stow(
        served, factory.make_series(patient, "CT", 1), path=f"/dicomweb/projects/open/studies/{generate_uid()}"
    )
    assert wrong_study.status_code == 409 and wrong_study.json()["00081198"]["Value"][0]["00081197"]["Value"] == [
        0xA900
    ]
    assert served.bridge.status()["open"].get("quarantined", 0) >= quarantined + 1
    assert _stow(served, good, user="reader").status_code == 403  # a viewer reads, never sends
    assert _stow(served, good, path="/dicomweb/studies").status_code == 400  # which project?
    cut = served.call(
        "POST",
        "/dicomweb/projects/open/studies",
        user="annotator",
        content=b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * 500,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
    )
    assert cut.status_code == 400
    json_parts = served.call(
        "POST",
        "/dicomweb/projects/open/studies",
        user="annotator",
        content=b"{}",
        headers={"Content-Type": 'multipart/related; type="application/dicom+json"; boundary=b'},
    )
    assert json_parts.status_code == 415
