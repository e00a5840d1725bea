"""`pacs-bridge pull` over DICOMweb from a real Orthanc (Debian's package with its DICOMweb plugin)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import factory
from tests.pull.conftest import REPOSITORY, bridge, status, write_config
from tests.pull.orthanc import OrthancServer

pytestmark = pytest.mark.integration


def test_remotes_check_says_what_works(orthanc: OrthancServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc)
    result = bridge("remotes", "check", "hospital", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   C-ECHO to ORTHANC" in result.stdout and "ok   QIDO-RS" in result.stdout

    broken = write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc)
    broken.write_text(broken.read_text().replace(orthanc.dicomweb_url, orthanc.dicomweb_url + "-nope"))
    result = bridge("remotes", "check", "hospital", config=broken)
    assert result.returncode == 1 and "FAIL QIDO-RS" in result.stdout and "HTTP 404" in result.stdout


def test_pull_by_patient_indexes_what_orthanc_holds(
    orthanc: OrthancServer,
    corpus: list,
    tmp_path: Path,
    database_url: str,  # type: ignore[type-arg]
) -> None:
    config = write_config(tmp_path, database_url, orthanc)
    first, second = corpus[0].PatientID, corpus[8].PatientID
    assert first != second

    result = bridge(
        "pull", "hospital", "--project", "lung", "--patient-id", first, "--patient-id", second, "--json", config=config
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["studies"], report["series"], report["fetched"], report["present"]) == (4, 4, 16, 0)
    assert report["failed"] == [] and report["missing"] == 0
    assert status(config) == {
        "name": "lung",
        "subjects": 2,
        "timepoints": 4,
        "series": 4,
        "instances": 16,
        "quarantined": 0,
    }
    stored = list((tmp_path / "store" / "lung").rglob("*.dcm"))
    assert len(stored) == 16 and all(first.encode() not in p.read_bytes() for p in stored)
    assert not list((tmp_path / "spool").rglob("*.dcm"))  # no part left behind
    # nor a temporary file of the ingest workers (made ahead of need, removed when they exit)
    assert not [p for p in (tmp_path / "store" / ".incoming").rglob("*") if p.is_file()]

    again = json.loads(
        bridge("pull", "hospital", "--project", "lung", "--patient-id", first, "--json", config=config).stdout
    )
    assert (again["fetched"], again["present"]) == (0, 8)  # nothing fetched twice


def test_filters_and_a_partly_held_series(orthanc: OrthancServer, corpus: list, tmp_path: Path) -> None:  # type: ignore[type-arg]
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc)
    study = corpus[0]
    held = [p for p in factory.write_files(corpus[:2], tmp_path / "held")]  # two instances of the first study
    assert bridge("import", *map(str, held), "--project", "lung", config=config).returncode == 0

    by_accession = json.loads(
        bridge(
            "pull", "hospital", "--project", "lung", "--accession", str(study.AccessionNumber), "--json", config=config
        ).stdout
    )
    assert (by_accession["studies"], by_accession["fetched"], by_accession["present"]) == (1, 2, 2)

    dates = sorted({str(ds.StudyDate) for ds in corpus})
    by_date = json.loads(
        bridge(
            "pull",
            "hospital",
            "--project",
            "lung",
            "--since",
            dates[-1],
            "--until",
            dates[-1],
            "--modality",
            "CT",
            "--json",
            config=config,
        ).stdout
    )
    assert by_date["studies"] == 1 and by_date["fetched"] == 4
    assert status(config)["instances"] == 8


def test_unknown_remote_and_bad_dates_are_clear_errors(orthanc: OrthancServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc)
    result = bridge("pull", "elsewhere", "--project", "lung", config=config)
    assert result.returncode == 2 and "unknown remote 'elsewhere'" in result.stderr
    result = bridge("pull", "hospital", "--project", "lung", "--since", "2024-01-01", config=config)
    assert result.returncode == 2 and "--since" in result.stderr


def indexed(database: Path) -> int:
    try:
        with sqlite3.connect(database, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM instance").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not created yet


def test_an_interrupted_pull_completes_on_the_next_run(orthanc: OrthancServer, tmp_path: Path) -> None:
    """Orthanc is stopped in the middle of a pull; the pull reports the failure; the next run completes."""
    datasets = factory.make_corpus(n_patients=3, studies_per_patient=2, per_series=40)
    orthanc.upload(factory.write_files(datasets, tmp_path / "corpus"))
    total = len(datasets)
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PACS_BRIDGE_")}
    with subprocess.Popen(
        [sys.executable, "-m", "bridge", "pull", "hospital", "--project", "lung", "--json", "--config", str(config)],
        cwd=REPOSITORY,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as puller:
        deadline = time.monotonic() + 60
        while indexed(tmp_path / "b.db") < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        orthanc.stop()
        out, err = puller.communicate(timeout=300)
    held = status(config)["instances"]
    assert puller.returncode != 0 and 20 <= held < total, (out, err)

    orthanc.start()
    result = bridge("pull", "hospital", "--project", "lung", "--json", config=config)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["present"] == held and report["fetched"] == total - held and report["failed"] == []
    assert status(config)["instances"] == total
    logs = out + err + result.stdout + result.stderr
    for ds in datasets:
        for secret in (str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), str(ds.PatientID)):
            assert secret not in logs, "identified data in the pull's output"


def test_a_remote_that_does_not_count_its_series_has_its_instances_listed(
    orthanc: OrthancServer,
    corpus: list,  # type: ignore[type-arg]
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Some PACS leave out Number of Series Related Instances. Orthanc always gives it, so the real adapter is
    wrapped to drop it (the only thing not real here); the pull must then list every instance to compare."""
    from bridge.pull import job as pull_job
    from bridge.pull.filters import PullFilters
    from bridge.remotes.base import RemoteSeries
    from bridge.remotes.dicomweb import DicomwebRemote
    from bridge.settings import load_settings
    from bridge.wiring import Runtime

    listed: list[str] = []

    class Uncounting(DicomwebRemote):
        def search_series(self, study_uid: str) -> list[RemoteSeries]:
            return [RemoteSeries(s.uid, None) for s in super().search_series(study_uid)]

        def search_instances(self, study_uid: str, series_uid: str | None = None) -> list:  # type: ignore[type-arg]
            listed.append(study_uid)
            return super().search_instances(study_uid, series_uid)

    settings = load_settings(write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc))
    monkeypatch.setattr(pull_job, "open_remote", lambda s, remote, project: Uncounting(remote))
    patient = str(corpus[0].PatientID)
    with Runtime.start(settings) as runtime:
        remote = settings.remote("hospital")
        first = pull_job.run_pull(settings, runtime, remote, "lung", PullFilters((patient,)), actor="t")
        assert (first.studies, first.fetched, first.missing, first.failed) == (2, 8, 0, [])
        assert len(listed) == 2  # one instance listing per study
        again = pull_job.run_pull(settings, runtime, remote, "lung", PullFilters((patient,)), actor="t")
        assert (again.fetched, again.present) == (0, 8)


def test_a_person_at_a_terminal_sees_progress_per_study(
    orthanc: OrthancServer,
    corpus: list,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    """On a terminal (a pseudo-terminal here), the pull shows a bar for the studies and one for the study
    being pulled, labelled with its number only (no identifier of the patient)."""
    import pty

    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc)
    patient = str(corpus[0].PatientID)
    controller, terminal = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PACS_BRIDGE_")}
    environment.update({"COLUMNS": "120", "TERM": "xterm"})
    command = ["pull", "hospital", "--project", "lung", "--patient-id", patient, "--config", str(config)]
    with subprocess.Popen(
        [sys.executable, "-m", "bridge", *command], cwd=REPOSITORY, env=environment, stdout=terminal, stderr=terminal
    ) as process:
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process ended
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(60) == 0
    os.close(controller)
    text = shown.decode("utf-8", "replace")
    assert "studies" in text and "study 1/2" in text and "study 2/2" in text
    assert "fetched 8" in text
    assert patient not in text and str(corpus[0].StudyInstanceUID) not in text


def test_ctrl_c_stops_a_pull_cleanly_and_the_next_run_completes(orthanc: OrthancServer, tmp_path: Path) -> None:
    # nine studies: the interrupt lands early, and the pull stops after the study it is on
    datasets = factory.make_corpus(n_patients=3, studies_per_patient=3, per_series=20)
    orthanc.upload(factory.write_files(datasets, tmp_path / "corpus"))
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PACS_BRIDGE_")}
    with subprocess.Popen(
        [sys.executable, "-m", "bridge", "pull", "hospital", "--project", "lung", "--config", str(config)],
        cwd=REPOSITORY,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    ) as puller:
        deadline = time.monotonic() + 60
        while indexed(tmp_path / "b.db") < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert puller.poll() is None, "the pull finished before it could be interrupted"
        os.killpg(puller.pid, signal.SIGINT)  # what Ctrl-C sends: to the whole foreground group
        out, err = puller.communicate(timeout=120)
    assert puller.returncode == 130, (out, err)  # stopped, not failed and not complete
    assert "interrupted: run the same pull again" in out
    assert "Traceback" not in err, err
    held = status(config)["instances"]
    assert 20 <= held < len(datasets)

    result = bridge("pull", "hospital", "--project", "lung", "--json", config=config)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["present"] + report["fetched"] == len(datasets) and report["failed"] == []
    assert status(config)["instances"] == len(datasets)
