"""The Orthanc harness itself: QIDO-RS, WADO-RS and DIMSE answer, options reach Orthanc, data survives restarts."""

from __future__ import annotations

import io
import os
import re
import subprocess
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from tests.factory import make_corpus, make_patient, make_series, write_files
from tests.pull.orthanc import OrthancServer, running_orthanc

pytestmark = pytest.mark.integration

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'


@pytest.fixture(scope="module")
def corpus() -> list[Dataset]:
    """2 patients x 2 studies x one CT series of 3 instances."""
    return make_corpus(n_patients=2, studies_per_patient=2, per_series=3)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, corpus: list[Dataset]) -> Iterator[OrthancServer]:
    """One Orthanc holding `corpus`, shared by the read-only tests of this module."""
    folder = tmp_path_factory.mktemp("orthanc")
    with running_orthanc(folder / "pacs") as server:
        assert len(server.upload(write_files(corpus, folder / "files"))) == len(corpus)
        yield server


def study_uids(corpus: list[Dataset]) -> list[str]:
    return sorted({str(ds.StudyInstanceUID) for ds in corpus})


def dicomweb(server: OrthancServer) -> Iterator[DICOMwebClient]:
    with server.http_session() as session:
        yield DICOMwebClient(url=server.dicomweb_url, session=session)


def multipart_parts(content_type: str, body: bytes) -> list[tuple[Message, bytes]]:
    """Split a multipart/related body into (part headers, part content)."""
    header = Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    assert isinstance(boundary, str), content_type
    chunks = body.split(b"--" + boundary.encode())
    assert chunks[-1].strip() == b"--", "missing closing delimiter"
    parts: list[tuple[Message, bytes]] = []
    for chunk in chunks[1:-1]:
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = Message()
        for line in head.decode("ascii").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        parts.append((headers, content.removesuffix(b"\r\n")))
    return parts


def test_qido_rs_finds_every_study(pacs: OrthancServer, corpus: list[Dataset]) -> None:
    assert pacs.count_instances() == len(corpus) == 12
    assert pacs.study_instance_uids() == study_uids(corpus)
    for client in dicomweb(pacs):
        studies = client.search_for_studies()
        assert len(studies) == 4
        assert sorted(study["0020000D"]["Value"][0] for study in studies) == study_uids(corpus)
        patient = str(corpus[0].PatientID)
        matched = client.search_for_studies(search_filters={"PatientID": patient})
        expected = sorted({str(ds.StudyInstanceUID) for ds in corpus if ds.PatientID == patient})
        assert sorted(study["0020000D"]["Value"][0] for study in matched) == expected
        assert len(expected) == 2


def test_qido_rs_finds_the_instances_of_a_study(pacs: OrthancServer, corpus: list[Dataset]) -> None:
    for client in dicomweb(pacs):
        for study in study_uids(corpus):
            expected = sorted(str(ds.SOPInstanceUID) for ds in corpus if ds.StudyInstanceUID == study)
            found = client.search_for_instances(study_instance_uid=study)
            assert sorted(instance["00080018"]["Value"][0] for instance in found) == expected


def test_wado_rs_retrieves_a_series_as_multipart(pacs: OrthancServer, corpus: list[Dataset]) -> None:
    first = corpus[0]
    series = [ds for ds in corpus if ds.SeriesInstanceUID == first.SeriesInstanceUID]
    answer = pacs.request(
        "GET",
        f"/dicom-web/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}",
        headers={"Accept": MULTIPART_DICOM, "Accept-Encoding": "identity"},
    )
    assert answer.status == 200, answer.body[:500]
    content_type = answer.headers["Content-Type"]
    assert content_type.startswith(MULTIPART_DICOM) and "boundary=" in content_type
    assert "Content-Encoding" not in answer.headers
    parts = multipart_parts(content_type, answer.body)
    assert [headers["Content-Type"] for headers, _ in parts] == ["application/dicom"] * len(series)
    assert all(int(headers["Content-Length"]) == len(content) for headers, content in parts)
    received = [pydicom.dcmread(io.BytesIO(content)) for _, content in parts]
    assert sorted(ds.SOPInstanceUID for ds in received) == sorted(ds.SOPInstanceUID for ds in series)


def test_echoscu_reaches_the_dicom_port(pacs: OrthancServer) -> None:
    completed = subprocess.run(
        ["echoscu", "-aet", "BRIDGE", "-aec", pacs.aet, "127.0.0.1", str(pacs.dicom_port)],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=30,
    )
    assert completed.returncode == 0, completed.stderr


def test_restart_keeps_data_and_ports(tmp_path: Path) -> None:
    series = make_series(make_patient(7), count=2)
    with running_orthanc(tmp_path / "pacs") as server:
        server.upload(write_files(series, tmp_path / "files"))
        server.add_modality("bridge", "BRIDGE", 11112)
        ports, pid = (server.http_port, server.dicom_port), server.process.pid  # type: ignore[union-attr]
        server.restart()
        assert (server.http_port, server.dicom_port) == ports
        assert server.process is not None and server.process.pid != pid
        assert server.count_instances() == 2
        assert server.study_instance_uids() == [series[0].StudyInstanceUID]
        assert server.rest("/modalities?expand")["bridge"]["Port"] == 11112
        for client in dicomweb(server):
            assert len(client.search_for_instances(study_instance_uid=series[0].StudyInstanceUID)) == 2
        server.delete_all()
        assert server.count_instances() == 0
        assert server.study_instance_uids() == []
    assert not server.running and server.process.returncode == 0


def test_caps_and_authentication_reach_orthanc(tmp_path: Path) -> None:
    corpus = make_corpus(n_patients=3, studies_per_patient=1, per_series=1)
    with running_orthanc(tmp_path / "pacs", limit_find_results=1, users={"pacs": "secret"}) as server:
        assert server.request("GET", "/system", auth=False).status == 401
        server.upload(write_files(corpus, tmp_path / "files"))
        # Orthanc 1.10 silently truncates QIDO-RS to LimitFindResults + 1 answers (no warning header).
        for client in dicomweb(server):
            assert 1 <= len(client.search_for_studies()) <= 2 < len(corpus)
        # C-FIND gives LimitFindResults pending answers, then the final status "Cancel" (FE00).
        completed = subprocess.run(
            ["findscu", "-v", "-S", "-aet", "BRIDGE", "-aec", server.aet, "-k", "QueryRetrieveLevel=STUDY"]
            + ["-k", "StudyInstanceUID", "127.0.0.1", str(server.dicom_port)],
            capture_output=True,
            text=True,
            env=DCMTK_ENV,
            timeout=30,
        )
        assert completed.returncode == 0, completed.stderr
        output = completed.stdout + completed.stderr
        assert len(re.findall(r"Find Response: \d+ \(Pending\)", output)) == 1
        assert "Final Find Response (Cancel" in output
