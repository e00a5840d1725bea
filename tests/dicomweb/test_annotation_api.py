"""Annotations over HTTP against a real `serve` (SQLite and PostgreSQL): a mask uploaded by an annotator's
token, reviewed by a reviewer's, delivered by serve's outbox into its own store and served over DICOMweb;
a SEG sent back by a viewer over STOW-RS and a SEG the modality sent over C-STORE both become annotations;
the roles hold (403) and no identifier comes back (the fixture greps every body)."""

from __future__ import annotations

import io
import time

import numpy as np
import pydicom
import pytest

from tests.annotations.drawn import viewer_seg
from tests.dicomweb.served import Served, user_token

pytestmark = pytest.mark.integration


def _wait(check, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _ct_series(served: Served) -> tuple[str, str, list[pydicom.Dataset]]:
    """The first CT series of subject 1's baseline (three slices; subject 2's RLE CT is series 1 too, with two)."""
    client = served.client(user="annotator")
    found = client.search_for_series(
        search_filters={"Modality": "CT", "SeriesNumber": "1"}, fields=["NumberOfSeriesRelatedInstances"]
    )
    (first,) = [item for item in found if item["00201209"]["Value"] == [3]]
    study, series = first["0020000D"]["Value"][0], first["0020000E"]["Value"][0]
    instances = client.retrieve_series(study, series)
    return study, series, sorted(instances, key=lambda ds: float(ds.ImagePositionPatient[2]))


def _reviewer(served: Served, name: str) -> str:
    if name not in served.tokens:
        served.tokens[name] = user_token(served.bridge.config, name, "--role", "reviewer", "--project", "open")
    return name


def test_upload_review_and_delivery_over_http(served: Served) -> None:
    study, series, sources = _ct_series(served)
    mask = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), dtype=np.uint8)
    mask[1, 10:20, 10:30] = 1
    body = io.BytesIO()
    np.save(body, mask)
    path = f"/api/v1/projects/open/series/{series}/annotations?labels=Tumor&format=npy"
    assert served.call("POST", path, user="reader", content=body.getvalue()).status_code == 403
    wrong = io.BytesIO()
    np.save(wrong, mask[:2])
    refused = served.call("POST", path, user="annotator", content=wrong.getvalue())
    assert refused.status_code == 422 and "must be 3x64x64" in refused.json()["detail"]
    created = served.call("POST", path, user="annotator", content=body.getvalue())
    assert created.status_code == 201, created.text
    annotation = created.json()
    assert (annotation["annotator"], annotation["state"], annotation["labels"]) == ("annotator", "in-review", ["Tumor"])

    review = f"/api/v1/annotations/{annotation['id']}/review"
    assert served.call("POST", review, user="annotator", json={"decision": "approve"}).status_code == 403
    reviewer = _reviewer(served, "rev1")
    assert served.call("POST", review, user=reviewer, json={"decision": "reject"}).status_code == 422  # no comment
    approved = served.call("POST", review, user=reviewer, json={"decision": "approve", "comment": "fine"})
    assert approved.status_code == 200 and approved.json()["state"] == "approved"

    def delivered() -> list[dict]:  # type: ignore[type-arg]
        answer = served.call("GET", "/api/v1/deliveries?state=delivered", user="reader").json()
        return [d for d in answer if d["annotation"] == annotation["id"]]

    done = _wait(delivered)
    assert done, served.call("GET", "/api/v1/deliveries", user="reader").text
    seg_series = done[0]["seg_series_uid"]
    found = served.client().search_for_series(study, search_filters={"Modality": "SEG"})
    assert seg_series in {item["0020000E"]["Value"][0] for item in found}
    seg = served.client().retrieve_series(study, seg_series)[0]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    assert str(seg.ContentCreatorName) == "annotator"
    shown = served.call("GET", f"/api/v1/annotations/{annotation['id']}", user="reader").json()
    assert [(d["stage"], d["decision"], d["reviewer"]) for d in shown["decisions"]] == [("review", "approve", "rev1")]


def _viewer_seg(sources: list[pydicom.Dataset]) -> pydicom.Dataset:
    mask = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), dtype=bool)
    mask[0, 5:15, 5:15] = True
    return viewer_seg(sources, mask, label="Node", series_number=99, model="viewer")


def test_segs_from_a_viewer_and_from_the_modality_become_annotations(served: Served) -> None:
    _, series, sources = _ct_series(served)
    stored = served.client(user="annotator").store_instances([_viewer_seg(sources)])
    assert "FailedSOPSequence" not in stored

    def by(annotator: str) -> list[dict]:  # type: ignore[type-arg]
        found = served.call("GET", "/api/v1/annotations?project=open", user="reader").json()
        return [a for a in found if a["annotator"] == annotator]

    from_viewer = _wait(lambda: by("annotator") and [a for a in by("annotator") if a["labels"] == ["Node"]])
    assert from_viewer and from_viewer[0]["series_instance_uid"] == series
    # the trial's identified SEG came over C-STORE from AE title MODALITY with its images
    from_modality = _wait(lambda: by("MODALITY"))
    assert from_modality and from_modality[0]["labels"] == ["Lesion"]
    assert from_modality[0]["series_instance_uid"] == series


def test_a_seg_naming_another_series_is_refused_over_stow_and_c_store(served: Served) -> None:
    from pydicom.uid import SegmentationStorage
    from pynetdicom import AE

    from bridge.remotes.scu import c_store

    study, series, sources = _ct_series(served)
    other = served.client().search_for_series(study, search_filters={"Modality": "CT", "SeriesNumber": "2"})
    other_series = other[0]["0020000E"]["Value"][0]
    wrong = _viewer_seg(sources)
    wrong.ReferencedSeriesSequence[0].SeriesInstanceUID = other_series
    response = served.call(
        "POST",
        f"/dicomweb/projects/open/studies/{study}",
        user="annotator",
        content=_multipart(wrong),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=seg-boundary'},
    )
    assert response.status_code == 409, response.text
    ae = AE(ae_title="SLICER")
    ae.add_requested_context(SegmentationStorage)
    assoc = ae.associate("127.0.0.1", served.bridge.port, ae_title="BRIDGE")
    assert assoc.is_established
    try:
        status = int(c_store(assoc, wrong).Status)
    finally:
        assoc.release()
    assert status == 0xA900
    found = served.call("GET", "/api/v1/annotations?project=open", user="reader").json()
    assert all(a["series_instance_uid"] != other_series for a in found)


def _multipart(ds: pydicom.Dataset) -> bytes:
    body = io.BytesIO()
    ds.save_as(body, enforce_file_format=True)
    head = b"--seg-boundary\r\nContent-Type: application/dicom\r\n\r\n"
    return head + body.getvalue() + b"\r\n--seg-boundary--\r\n"
