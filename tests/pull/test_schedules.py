"""`[[schedules]]`: pulls that `serve` runs by itself, against a real Orthanc, with a persisted watermark."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from tests import factory
from tests.pull.conftest import bridge
from tests.pull.orthanc import OrthancServer
from tests.pull.test_pull_dimse import dimse_config
from tests.serve_process import BridgeProcess

pytestmark = pytest.mark.integration


def schedule_status(config: Path) -> dict[str, Any]:
    result = bridge("status", "--json", config=config)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    return {"instances": data["projects"][0]["instances"], **data["schedules"][0]}


def wait_until(config: Path, condition: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = schedule_status(config)
        if condition(seen):
            return seen
        time.sleep(0.5)
    raise TimeoutError(f"schedule status never got there: {seen}")


def scheduled(tmp_path: Path, orthanc: OrthancServer, schedule: str) -> tuple[Path, BridgeProcess]:
    config = dimse_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc, "dicomweb")
    config.write_text(config.read_text() + "\n[[schedules]]\n" + schedule)
    port = int(config.read_text().split("\nport = ")[-1].split()[0])
    return config, BridgeProcess(config=config, port=port, log=tmp_path / "serve.log")


def test_a_schedule_brings_follow_up_studies_and_only_searches_from_its_watermark(
    orthanc: OrthancServer, corpus: list[Dataset], tmp_path: Path
) -> None:
    enrolled = [str(corpus[0].PatientID), str(corpus[8].PatientID)]  # two of the three patients
    config, serve = scheduled(
        tmp_path,
        orthanc,
        'name = "followups"\nremote = "hospital"\nproject = "lung"\nevery = "2s"\n'
        f"patient_ids = {json.dumps(enrolled)}\n",
    )
    serve.start()
    try:
        first = wait_until(config, lambda s: s["instances"] == 16 and s["last_ok"] is True)
        assert first["remote"] == "hospital" and first["when"] == "every 2s"
        # from now on each run asks only for studies since yesterday: the four old studies are not searched
        wait_until(config, lambda s: (s["last_result"] or "").startswith("studies 0,"))

        today = dt.date.today().strftime("%Y%m%d")
        follow_up = factory.make_study(factory.make_patient(1), study_date=today, per_series=4)
        assert str(follow_up[0].PatientID) == enrolled[0]
        orthanc.upload(factory.write_files(follow_up, tmp_path / "follow-up"))
        later = wait_until(config, lambda s: s["instances"] == 20)
        assert later["last_ok"] is True
        wait_until(config, lambda s: (s["last_result"] or "").startswith("studies 1,"))
    finally:
        assert serve.stop() == 0
    log = (tmp_path / "serve.log").read_text()
    for ds in corpus + follow_up:
        assert str(ds.PatientID) not in log and str(ds.StudyInstanceUID) not in log


def test_runs_missed_while_down_run_once(orthanc: OrthancServer, corpus: list[Dataset], tmp_path: Path) -> None:
    config, serve = scheduled(
        tmp_path, orthanc, 'name = "hourly"\nremote = "hospital"\nproject = "lung"\nevery = "1h"\nmodality = "CT"\n'
    )
    serve.start()
    try:
        first = wait_until(config, lambda s: s["runs"] == 1 and s["last_ok"] is not None)  # never ran: runs now
        assert first["last_ok"] is True and first["instances"] == 24
    finally:
        assert serve.stop() == 0

    # five hourly runs were missed while the service was down
    five_hours_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=5)).replace(tzinfo=None)
    with sqlite3.connect(tmp_path / "b.db") as db:
        db.execute("UPDATE schedulestate SET last_started_at = ?", (five_hours_ago.isoformat(sep=" "),))
    serve.start()
    try:
        wait_until(config, lambda s: s["runs"] == 2 and s["last_ok"] is not None)
        time.sleep(3)
        again = schedule_status(config)
        assert again["runs"] == 2, "missed runs were replayed"
        next_due = dt.datetime.fromisoformat(again["next_due"])
        assert dt.timedelta(minutes=55) < next_due - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)
    finally:
        assert serve.stop() == 0


def test_a_wrong_schedule_stops_start_up_naming_it(orthanc: OrthancServer, tmp_path: Path) -> None:
    config, _ = scheduled(tmp_path, orthanc, 'name = "bad"\nremote = "nowhere"\nproject = "lung"\nevery = "1h"\n')
    result = bridge("status", config=config)
    assert result.returncode == 2 and "schedule 'bad': remote 'nowhere' is not configured" in result.stderr
    config, _ = scheduled(tmp_path, orthanc, 'name = "bad"\nremote = "hospital"\nproject = "lung"\nevery = "5x"\n')
    result = bridge("status", config=config)
    assert result.returncode == 2 and "every '5x'" in result.stderr


def test_a_command_line_c_move_pull_does_not_run_the_schedules(
    orthanc: OrthancServer, corpus: list[Dataset], tmp_path: Path
) -> None:
    """With no `serve` running, a C-MOVE pull runs a listener of its own for the instances Orthanc sends; the
    schedules are `serve`'s alone and stay untouched (that listener used to be the whole service, schedules
    included: this schedule, due at once, then pulled every study)."""
    config = dimse_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", orthanc, "c-move")
    config.write_text(
        config.read_text() + '\n[[schedules]]\nname = "nightly"\nremote = "hospital"\nproject = "lung"\nevery = "1h"\n'
    )

    result = bridge(
        "pull", "hospital", "--project", "lung", "--accession", str(corpus[0].AccessionNumber), "--json", config=config
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["fetched"] == 4
    seen = schedule_status(config)
    assert (seen["runs"], seen["last_started_at"], seen["instances"]) == (0, None, 4)
