"""`pacs-bridge cohort` and `timepoints` as a data manager runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests import factory
from tests.cli.test_cli import run, write_config
from tests.cohorts import population

pytestmark = pytest.mark.integration

VISITS = "".join(
    f'\n[[projects.lung.visits]]\nlabel = "{v["label"]}"\nfrom_day = {v["from_day"]}\nto_day = {v["to_day"]}\n'
    for v in population.VISITS
)
EXAMPLE = ["--project", "lung", "--modality", "CT", "--body-part", "CHEST", "--slice-thickness-max", "2.5"]
EXAMPLE += ["--min-followups", "2"]


@pytest.fixture
def trial(tmp_path: Path, database_url: str) -> Path:
    config = write_config(tmp_path, database_url, extra=VISITS)
    population.write(tmp_path / "in")
    done = run("import", str(tmp_path / "in"), "--project", "lung", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return config


def cli(config: Path, *args: str) -> str:
    done = run(*args, "--config", str(config), cwd=config.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_example_in_one_command_in_each_format(trial: Path) -> None:
    answer = json.loads(cli(trial, "cohort", *EXAMPLE, "--level", "subject", "--format", "json"))
    timepoints = json.loads(cli(trial, "cohort", *EXAMPLE, "--level", "timepoint", "--format", "json"))["rows"]
    found = population.timelines(timepoints)
    assert set(found.values()) == population.EXAMPLE_TIMELINES and answer["total"] == 2
    assert {row["subject"] for row in answer["rows"]} == set(found)

    series = json.loads(cli(trial, "cohort", *EXAMPLE, "--format", "json"))["rows"]
    assert len(series) == 6
    wanted = {"subject", "timepoint_label", "days_from_baseline", "study_instance_uid", "series_instance_uid"}
    assert wanted | {"modality", "body_part", "slice_thickness", "instances"} <= set(series[0])
    assert [row["timepoint_label"] for row in series[:3]] == ["baseline", "week8", "week16"]

    table = list(csv.DictReader(io.StringIO(cli(trial, "cohort", *EXAMPLE, "--level", "timepoint", "--format", "csv"))))
    assert {r["timepoint_label"] for r in table if r["days_from_baseline"] == "200"} == {"unscheduled"}

    people = cli(trial, "cohort", *EXAMPLE, "--level", "subject")
    assert all(code in people for code in found) and "total 2" in people


def test_a_saved_cohort_follows_the_data_and_a_snapshot_does_not(trial: Path, tmp_path: Path) -> None:
    cli(trial, "cohort", "save", "thin-chest", *EXAMPLE)
    before = json.loads(cli(trial, "cohort", "run", "thin-chest", "--level", "subject", "--format", "json"))
    assert before["total"] == 2
    frozen = json.loads(cli(trial, "cohort", "snapshot", "thin-chest", "--json"))
    assert frozen["name"] == "thin-chest@1" and frozen["series"] == 6 and frozen["instances"] == 12

    # a third subject completes the example: the cohort grows, the snapshot stays
    newcomer = {2: [population.Scan(0), population.Scan(56), population.Scan(112)]}
    folder = tmp_path / "more"
    factory.write_files(population.datasets(newcomer), folder)
    assert run("import", str(folder), "--project", "lung", "--config", str(trial), cwd=tmp_path).returncode == 0
    after = json.loads(cli(trial, "cohort", "run", "thin-chest", "--level", "subject", "--format", "json"))
    assert after["total"] == 3
    again = json.loads(cli(trial, "cohort", "run", "thin-chest@1", "--format", "json"))
    assert again["content_hash"] == frozen["content_hash"] and again["total"] == 6
    assert again["gone"] == {"series": [], "instances": []}
    second = json.loads(cli(trial, "cohort", "snapshot", "thin-chest", "--json"))
    assert second["name"] == "thin-chest@2" and second["content_hash"] != frozen["content_hash"]

    out = tmp_path / "export"
    exported = json.loads(cli(trial, "export", "thin-chest@1", "--to", str(out), "--json"))
    assert (exported["files"], exported["written"], exported["missing"]) == (12, 12, [])
    assert len(list(out.rglob("*.dcm"))) == 12 and (out / "manifest.csv").is_file()
    resumed = json.loads(cli(trial, "export", "thin-chest@1", "--to", str(out), "--json"))
    assert (resumed["written"], resumed["unchanged"]) == (0, 12)

    listed = json.loads(cli(trial, "cohort", "list", "--json"))
    assert [(c["name"], [s["name"] for s in c["snapshots"]]) for c in listed] == [
        ("thin-chest", ["thin-chest@1", "thin-chest@2"])
    ]


def test_a_hand_set_label_wins_over_the_rules_and_is_audited(trial: Path) -> None:
    everything = json.loads(cli(trial, "cohort", "--project", "lung", "--level", "timepoint", "-f", "json"))["rows"]
    late = population.subject_with_day(everything, 200)
    shown = cli(trial, "timepoints", "label", late, "200", "week28", "--project", "lung")
    assert "week28 (manual)" in shown
    cli(trial, "timepoints", "relabel", "--project", "lung")
    rows = json.loads(
        cli(trial, "cohort", "--project", "lung", "--subject", late, "--level", "timepoint", "-f", "json")
    )
    assert [r["timepoint_label"] for r in rows["rows"]] == ["baseline", "week8", "week28"]
    cleared = cli(trial, "timepoints", "label", late, "200", "--clear", "--project", "lung")
    assert "unscheduled (visit)" in cleared


MISTAKES = [
    (["cohort", "--modality", "CT"], "--project is required"),
    (["cohort", "--project", "lung", "--days-min", "9", "--days-max", "1"], "days_min (9) is above days_max"),
    (["cohort", "--project", "lung", "--sort", "name"], "cannot sort by 'name'"),
    (["cohort", "run", "nothing"], "no saved cohort 'nothing'"),
    (["cohort", "save", "bad name!", "--project", "lung"], "cohort name 'bad name!'"),
    (["timepoints", "label", "LUNG-0001", "999", "x", "--project", "lung"], "no timepoint '999' of LUNG-0001"),
]


def test_mistakes_are_one_clear_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'bridge.db'}", extra=VISITS)
    factory.write_files(population.datasets({1: population.TRIAL[1]}), tmp_path / "in")
    assert (
        run("import", str(tmp_path / "in"), "--project", "lung", "--config", str(config), cwd=tmp_path).returncode == 0
    )
    for args, message in MISTAKES:
        done = run(*args, "--config", str(config), cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
