"""`pacs-bridge pull` over DIMSE from a real Orthanc: C-FIND, then C-GET or C-MOVE to the bridge's listener."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from tests import factory
from tests.dimse.test_transport import make_tls_files
from tests.pull.conftest import bridge, status, write_config
from tests.pull.orthanc import OrthancServer, running_orthanc
from tests.serve_process import DCMTK_ENV, BridgeProcess, free_port

pytestmark = pytest.mark.integration


def dimse_config(tmp_path: Path, database_url: str, orthanc: OrthancServer, retrieve: str, extra: str = "") -> Path:
    """The bridge listens on its own port; project LUNG is called as AE title LUNG (the C-MOVE destination)."""
    port = free_port()
    config = write_config(
        tmp_path,
        database_url,
        orthanc,
        extra=f"""retrieve = "{retrieve}"
{extra}
[dimse]
host = "127.0.0.1"
port = {port}
ae_title = "BRIDGE"
workers = 1
listeners = 1
min_free_space_mb = 0

[projects.lung.dimse]
ae_title = "LUNG"
""",
    )
    orthanc.add_modality("bridge-lung", "LUNG", port)
    return config


def assert_no_identifiers(text: str, datasets: list[Dataset]) -> None:
    for ds in datasets:
        for secret in (str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), str(ds.PatientID)):
            assert secret not in text, "identified data in the pull's output"


def test_pull_with_c_get(orthanc: OrthancServer, corpus: list[Dataset], tmp_path: Path, database_url: str) -> None:
    config = dimse_config(tmp_path, database_url, orthanc, "c-get")
    patient = str(corpus[0].PatientID)

    result = bridge("pull", "hospital", "--project", "lung", "--patient-id", patient, "--json", config=config)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["studies"], report["series"], report["fetched"], report["present"]) == (2, 2, 8, 0)
    assert report["failed"] == [] and report["missing"] == 0
    assert (status(config)["subjects"], status(config)["instances"]) == (1, 8)
    stored = list((tmp_path / "store" / "lung").rglob("*.dcm"))
    assert len(stored) == 8 and all(patient.encode() not in p.read_bytes() for p in stored)
    assert_no_identifiers(result.stdout + result.stderr, corpus)


def test_pull_with_c_move_runs_a_listener_when_serve_is_not_running(
    orthanc: OrthancServer, corpus: list[Dataset], tmp_path: Path
) -> None:
    config = dimse_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc, "c-move")

    result = bridge("pull", "hospital", "--project", "lung", "--json", config=config)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["studies"], report["fetched"], report["missing"], report["failed"]) == (6, 24, 0, [])
    assert status(config)["instances"] == 24
    assert not [p for p in (tmp_path / "spool").rglob("*.dcm")], "the listener's spool was not drained"
    assert_no_identifiers(result.stdout + result.stderr, corpus)


def test_pull_with_c_move_into_a_running_serve(orthanc: OrthancServer, corpus: list[Dataset], tmp_path: Path) -> None:
    config = dimse_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc, "c-move")
    port = int(config.read_text().split("port = ")[-1].split()[0])
    serve = BridgeProcess(config=config, port=port, log=tmp_path / "serve.log").start()
    try:
        result = bridge(
            "pull",
            "hospital",
            "--project",
            "lung",
            "--accession",
            str(corpus[0].AccessionNumber),
            "--json",
            config=config,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert (report["studies"], report["fetched"], report["failed"]) == (1, 4, [])
        assert "listening on" not in result.stderr  # the pull used serve's listener, it did not start one
    finally:
        assert serve.stop() == 0
    with sqlite3.connect(tmp_path / "b.db") as db:
        assert db.execute("SELECT source, count(*) FROM instance GROUP BY source").fetchall() == [
            ("c-store:ORTHANC", 4)
        ]


def test_c_move_that_delivers_elsewhere_is_a_failure(
    orthanc: OrthancServer, corpus: list[Dataset], tmp_path: Path
) -> None:
    """Orthanc answers Success, but the instances went to another node: the pull fails, naming what is missing."""
    elsewhere = free_port()
    orthanc.add_modality("elsewhere", "ELSEWHERE", elsewhere)
    received = tmp_path / "elsewhere"
    received.mkdir()
    with subprocess.Popen(
        ["storescp", "-aet", "ELSEWHERE", "-od", str(received), str(elsewhere)], env=DCMTK_ENV
    ) as storescp:
        try:
            config = dimse_config(
                tmp_path,
                f"sqlite:///{tmp_path / 'b.db'}",
                orthanc,
                "c-move",
                extra='move_destination = "ELSEWHERE"',
            )
            config.write_text(config.read_text().replace("timeout = 20", "timeout = 3"))
            result = bridge(
                "pull",
                "hospital",
                "--project",
                "lung",
                "--accession",
                str(corpus[0].AccessionNumber),
                "--json",
                config=config,
            )
        finally:
            storescp.terminate()
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["missing"] == 4 and report["fetched"] == 0
    assert "4 of 4 instances still missing" in report["failed"][0]
    assert len(list(received.iterdir())) >= 4  # Orthanc did send them, to the other node
    assert status(config)["instances"] == 0


@pytest.mark.parametrize("retrieve", ["c-get", "dicomweb"])
def test_a_capped_search_is_split_by_dates(tmp_path: Path, retrieve: str) -> None:
    """Orthanc returns at most 2 studies per search (C-FIND ends with Cancel; QIDO-RS truncates silently):
    every one of the 6 studies is still found and pulled."""
    corpus = factory.make_corpus(n_patients=3, studies_per_patient=2, per_series=1)
    with running_orthanc(tmp_path / "orthanc", limit_find_results=2) as orthanc:
        orthanc.upload(factory.write_files(corpus, tmp_path / "corpus"))
        config = dimse_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc, retrieve, extra="result_limit = 2")
        result = bridge("pull", "hospital", "--project", "lung", "--json", config=config)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["studies"], report["fetched"], report["failed"]) == (6, 6, [])


def test_remotes_check_names_a_dimse_node_that_does_not_answer(orthanc: OrthancServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc)
    config.write_text(config.read_text().replace(f"port = {orthanc.dicom_port}", f"port = {free_port()}"))
    result = bridge("remotes", "check", "hospital", config=config)
    assert result.returncode == 1
    assert "FAIL C-ECHO to ORTHANC" in result.stdout and "no association" in result.stdout
    assert "ok   QIDO-RS" in result.stdout


def test_pull_over_dicom_tls(tmp_path: Path) -> None:
    """Orthanc's DICOM port speaks TLS only: the remote's `tls` and CA file make C-ECHO and C-GET work."""
    files = make_tls_files(tmp_path / "tls")
    tls = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(files.server_cert),
        "DicomTlsPrivateKey": str(files.server_key),
        "DicomTlsTrustedCertificates": str(files.ca_cert),
        "DicomTlsRemoteCertificateRequired": False,
    }
    corpus = factory.make_corpus(n_patients=1, studies_per_patient=1, per_series=3)
    with running_orthanc(tmp_path / "orthanc", extra=tls) as orthanc:
        orthanc.upload(factory.write_files(corpus, tmp_path / "corpus"))
        plain = dimse_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc, "c-get")
        assert "FAIL C-ECHO" in bridge("remotes", "check", "hospital", config=plain).stdout  # TLS is required
        config = dimse_config(
            tmp_path,
            f"sqlite:///{tmp_path / 'b.db'}",
            orthanc,
            "c-get",
            extra=f'tls = true\ntls_ca_file = "{files.ca_cert}"',
        )
        check = bridge("remotes", "check", "hospital", config=config)
        assert "ok   C-ECHO to ORTHANC" in check.stdout and "(TLS)" in check.stdout, check.stdout + check.stderr
        result = bridge("pull", "hospital", "--project", "lung", "--json", config=config)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["fetched"] == 3
