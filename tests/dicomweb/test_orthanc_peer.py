"""Orthanc (Debian's, with its DICOMweb plugin) using the bridge as one of its DICOMweb servers
(`DicomWeb.Servers`): its QIDO-RS and WADO-RS client bring a de-identified study into Orthanc whole, and its
STOW-RS client sends an instance into a bridge project, the way a hospital's or a lab's Orthanc would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import factory
from tests.dicomweb.served import Served, identifiers
from tests.pull.orthanc import OrthancServer, running_orthanc

pytestmark = pytest.mark.integration


@pytest.fixture
def orthanc(served: Served, tmp_path: Path) -> Iterator[OrthancServer]:
    bridge = {
        "Url": f"{served.base}/dicomweb/projects/open/",
        "Username": "annotator",  # HTTP basic: the token's name and the token
        "Password": served.tokens["annotator"],
    }
    with running_orthanc(tmp_path / "orthanc", dicomweb={"Servers": {"bridge": bridge}}) as server:
        yield server


def post(orthanc: OrthancServer, route: str, body: dict) -> object:  # type: ignore[type-arg]
    return orthanc.rest(route, "POST", json.dumps(body).encode())


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)
def test_orthanc_finds_and_retrieves_a_study_whole(served: Served, orthanc: OrthancServer) -> None:
    found = post(
        orthanc, "/dicom-web/servers/bridge/qido", {"Uri": "/studies", "Arguments": {"PatientID": "OPEN-0001"}}
    )
    assert isinstance(found, list) and len(found) == 2, found
    # Orthanc's answer is its own JSON: one string per attribute, the first value only, numbers left out
    baseline = next(s for s in found if s["00080061"].get("Value") == "CT")  # the CT with its SEG; the MR
    study_uid = baseline["0020000D"]["Value"]
    assert baseline["00100020"]["Value"] == "OPEN-0001"

    post(orthanc, "/dicom-web/servers/bridge/retrieve", {"Resources": [{"Study": study_uid}]})
    studies = orthanc.rest("/studies?expand")
    assert [s["MainDicomTags"]["StudyInstanceUID"] for s in studies] == [study_uid]
    instances = orthanc.rest(f"/studies/{studies[0]['ID']}/instances")
    assert len(instances) == 7  # whole: both CT series and the SEG
    secret = identifiers(served.sent)
    for instance in instances:
        tags = orthanc.rest(f"/instances/{instance['ID']}/simplified-tags")
        assert tags["PatientID"] == "OPEN-0001"
        flat = json.dumps(tags)
        assert not [value for value in secret if value in flat]


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)
def test_orthanc_stows_into_a_bridge_project(served: Served, orthanc: OrthancServer, tmp_path: Path) -> None:
    sent = factory.make_series(factory.make_patient(5), "CT", 2, study_date="20240701")
    ids = orthanc.upload(factory.write_files(sent, tmp_path / "to-stow"))
    before = served.bridge.status()["open"]["instances"]
    post(orthanc, "/dicom-web/servers/bridge/stow", {"Resources": ids})
    served.bridge.wait_for("open", before + 2)
