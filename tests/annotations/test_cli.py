"""The annotation commands as a project lead runs them (SQLite and PostgreSQL): tasks from a saved cohort,
two annotators' masks, the agreement figures (checked against hand-computed Dice), a majority-vote consensus
approved as final, the review queue and clear one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests import factory
from tests.cli.test_cli import run, write_config

pytestmark = pytest.mark.integration


def cli(config: Path, *args: str, status: int = 0) -> str:
    done = run(*args, "--config", str(config), cwd=config.parent)
    assert done.returncode == status, done.stderr + done.stdout
    return done.stdout if status == 0 else done.stderr


@pytest.fixture
def trial(tmp_path: Path, database_url: str) -> Path:
    config = write_config(tmp_path, database_url)
    datasets = factory.make_corpus(n_patients=2, studies_per_patient=1, per_series=4)
    factory.write_files(datasets, tmp_path / "in")
    cli(config, "import", str(tmp_path / "in"), "--project", "lung")
    for name, role in (("alice", "annotator"), ("bob", "annotator"), ("rita", "reviewer")):
        cli(config, "users", "create", name, "--role", role, "--project", "lung", "--json")
    cli(config, "cohort", "save", "ct", "--project", "lung", "--modality", "CT")
    return config


def test_tasks_masks_agreement_and_consensus(trial: Path, tmp_path: Path) -> None:
    tasks = json.loads(
        cli(
            trial,
            "tasks",
            "create",
            "--cohort",
            "ct",
            "--labels",
            "Tumor",
            "--annotators",
            "alice,bob",
            "--per-task",
            "2",
            "--format",
            "json",
        )
    )
    assert len(tasks) == 2 and all(task["annotators"] == ["alice", "bob"] for task in tasks)
    assert tasks[0]["viewer"] == f"/viewer/subject?project=lung&subject={tasks[0]['subject']}"
    assert (
        cli(
            trial,
            "tasks",
            "create",
            "--cohort",
            "ct",
            "--labels",
            "Tumor",
            "--annotators",
            "alice,bob",
            "--format",
            "json",
        ).strip()
        == "[]"
    )  # again: every subject has its task already
    task = tasks[0]
    series = task["series"][0]["series_instance_uid"]
    shape = (4, 64, 64)
    alice, bob = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    alice[1, 0:4, 0:4] = 1  # 16 voxels
    bob[1, 0:4, 2:6] = 1  # 16 voxels, 8 shared: Dice = 2 * 8 / (16 + 16) = 0.5
    ids = {}
    for name, mask in (("alice", alice), ("bob", bob)):
        path = tmp_path / f"{name}.npy"
        np.save(path, mask)
        made = json.loads(
            cli(
                trial,
                "annotations",
                "import",
                series,
                str(path),
                "--label",
                "Tumor",
                "--annotator",
                name,
                "--task",
                str(task["id"]),
                "--json",
            )
        )
        ids[name] = made["id"]
        assert made["task"] == task["id"] and made["state"] == "in-review"
    listed = json.loads(cli(trial, "tasks", "list", "--annotator", "alice", "--format", "json"))
    assert next(t for t in listed if t["id"] == task["id"])["annotations"] == {"alice": 1, "bob": 1}

    rows = json.loads(cli(trial, "annotations", "agreement", "--project", "lung", "--format", "json"))
    assert [(r["label"], r["first"], r["second"], r["series"], r["dice"]) for r in rows] == [
        ("Tumor", "alice", "bob", 1, 0.5)
    ]
    assert rows[0]["hausdorff95_mm"] > 0
    table = cli(trial, "annotations", "agreement", "--project", "lung", "--task", str(task["id"]))
    assert "alice" in table and "0.5" in table

    error = cli(trial, "annotations", "consensus", series, "--reviewer", "alice", "--method", "majority", status=2)
    assert "alice" in error and "review" in error and "Traceback" not in error
    combined = json.loads(
        cli(trial, "annotations", "consensus", series, "--reviewer", "rita", "--method", "majority", "--json")
    )
    assert combined["state"] == "approved" and sorted(combined["consensus_of"]) == sorted(ids.values())
    assert combined["versions"][0]["segments"][0]["voxels"] == 8  # both drew them: the intersection
    assert [d["destination"] for d in combined["deliveries"]] == ["research"]
    queue = json.loads(cli(trial, "annotations", "list", "--state", "in-review", "--format", "json"))
    assert {a["id"] for a in queue} == set(ids.values())

    people = json.loads(cli(trial, "annotations", "agreement", "--project", "lung", "--annotators", "--format", "json"))
    by_name = {row["annotator"]: row for row in people}
    assert by_name["alice"]["mean_dice_with_final"] == pytest.approx(2 * 8 / (16 + 8), abs=1e-4)
    assert by_name["bob"]["revisions"] == 0 and by_name["bob"]["reviewed"] == 0


def test_clear_errors(trial: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.npy"
    np.save(path, np.ones((2, 2, 2), np.uint8))
    error = cli(trial, "annotations", "import", "2.25.1", str(path), "--label", "T", "--annotator", "a", status=2)
    assert "no indexed series 2.25.1" in error
    error = cli(trial, "annotations", "review", "1", "--approve", "--reviewer", "nobody", status=2)
    assert "no active user 'nobody'" in error
    assert "no delivery 7" in cli(trial, "deliveries", "retry", "7", status=2)
    assert "--state is one of" in cli(trial, "deliveries", "--state", "lost", status=2)
