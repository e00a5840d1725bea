"""The command line as a user runs it: a real `pacs-bridge` process, a config file, a folder of files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests import factory
from tests.serve_process import config_head

pytestmark = pytest.mark.integration


def write_config(folder: Path, database_url: str, extra: str = "") -> Path:
    config = folder / "bridge.toml"
    config.write_text(
        config_head(folder, database_url, log_level="DEBUG")
        + f"""
[projects.lung]
subject_prefix = "LUNG"
{extra}
"""
    )
    return config


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PACS_BRIDGE_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, list]:  # type: ignore[type-arg]
    """Two patients x two studies, a DICOMDIR, a text file, a truncated file and a file nobody may read."""
    datasets = factory.make_corpus(n_patients=2, studies_per_patient=2, per_series=2)
    folder = tmp_path / "cd"
    factory.write_files(datasets, folder)
    (folder / "DICOMDIR").write_bytes(b"\x00" * 128 + b"DICM" + b"\x00" * 64)
    (folder / "README.TXT").write_text("patient CD\n")
    [truncated] = factory.write_files([factory.make_ct(factory.make_patient(9), rows=128, columns=128)], tmp_path / "t")
    data = truncated.read_bytes()
    (folder / "broken.dcm").write_bytes(data[: len(data) // 2])
    return folder, datasets


def test_import_then_status(tmp_path: Path, corpus: tuple[Path, list], database_url: str) -> None:  # type: ignore[type-arg]
    folder, datasets = corpus
    config = write_config(tmp_path, database_url)

    first = run("import", str(folder), "--project", "lung", "--config", str(config), "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["stored"] == len(datasets) == 8
    assert summary["quarantined"] == 1 and summary["skipped_non_dicom"] == 1 and summary["skipped_dicomdir"] == 1
    assert any("truncated" in reason for reason in summary["quarantine_reasons"])

    second = run("import", str(folder), "--project", "lung", "--config", str(config), "--json", cwd=tmp_path)
    assert json.loads(second.stdout)["duplicates"] == 8

    status = run("status", "--config", str(config), "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {
        "projects": [{"name": "lung", "subjects": 2, "timepoints": 4, "series": 4, "instances": 8, "quarantined": 1}],
        "schedules": [],
    }
    human = run("status", "--config", str(config), cwd=tmp_path)
    assert "lung" in human.stdout and "8" in human.stdout

    logs = first.stderr + second.stderr + status.stderr
    for ds in datasets:
        for secret in (
            str(ds.PatientID),
            str(ds.StudyInstanceUID),
            str(ds.SOPInstanceUID),
            str(ds.AccessionNumber),
            str(ds.PatientName).split("^")[0],
        ):
            assert secret not in logs, "identified data in the logs"


def test_import_prints_a_human_summary(tmp_path: Path, corpus: tuple[Path, list]) -> None:  # type: ignore[type-arg]
    folder, _ = corpus
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}")
    result = run("import", str(folder), "--project", "lung", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "stored 8" in result.stdout and "quarantined 1" in result.stdout
    assert "truncated" in result.stdout
    with sqlite3.connect(tmp_path / "b.db") as connection:  # the import left statistics for the planner
        analyzed = {table for (table,) in connection.execute("SELECT tbl FROM sqlite_stat1")}
    assert {"subject", "timepoint", "series", "instance"} <= analyzed


def test_unknown_project_and_missing_path_are_clear_errors(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}")
    result = run("import", str(tmp_path), "--project", "nope", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "unknown project 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("import", str(tmp_path / "absent"), "--project", "lung", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "no such file or folder" in result.stderr


def test_a_wrong_key_or_value_stops_start_up_naming_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", extra="colour = 'blue'")
    result = run("status", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "projects.lung.colour" in result.stderr

    wrong_value = "[projects.lung.deid]\nretain_uids = 'maybe'"
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", extra=wrong_value)
    result = run("status", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "projects.lung.deid.retain_uids" in result.stderr

    result = run("status", "--config", str(config), cwd=tmp_path, env={"PACS_BRIDGE_DATABSE__URL": "sqlite:///x.db"})
    assert result.returncode == 2 and "PACS_BRIDGE_DATABSE__URL" in result.stderr


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'file.db'}")
    other = tmp_path / "env.db"
    result = run(
        "status",
        "--config",
        str(config),
        "--json",
        cwd=tmp_path,
        env={
            "PACS_BRIDGE_DATABASE__URL": f"sqlite:///{other}",
            "PACS_BRIDGE_PROJECTS__LUNG__DEID__RETAIN_UIDS": "true",
        },
    )
    assert result.returncode == 0, result.stderr
    assert other.exists() and not (tmp_path / "file.db").exists()
    bad = run(
        "status",
        "--config",
        str(config),
        cwd=tmp_path,
        env={"PACS_BRIDGE_PROJECTS__LUNG__SUBJECT_PREFIX": "lower case"},
    )
    assert bad.returncode == 2 and "projects.lung.subject_prefix" in bad.stderr


def test_default_config_is_the_embedded_default(tmp_path: Path) -> None:
    """`config/bridge.toml` starts the service on SQLite and ./var/ without any other file."""
    repository = Path(__file__).resolve().parents[2]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "bridge.toml").write_text((repository / "config" / "bridge.toml").read_text())
    factory.write_files([factory.make_ct(factory.make_patient(1))], tmp_path / "in")
    imported = run("import", "in", "--project", "demo", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    result = run("status", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "pacs-bridge.db").is_file() and (tmp_path / "var" / "secret.key").is_file()
    assert oct((tmp_path / "var" / "secret.key").stat().st_mode & 0o777) == "0o600"
    assert list((tmp_path / "var" / "store" / "demo").rglob("*.dcm"))
    assert json.loads(result.stdout)["projects"] == [
        {"name": "demo", "subjects": 1, "timepoints": 1, "series": 1, "instances": 1, "quarantined": 0}
    ]


@pytest.mark.parametrize("example", ["postgresql.toml", "multi-project.toml"])
def test_example_configs_are_valid(example: str) -> None:
    from bridge.settings import load_settings

    repository = Path(__file__).resolve().parents[2]
    settings = load_settings(repository / "config" / "examples" / example)
    assert settings.projects


def test_db_upgrade(tmp_path: Path, database_url: str) -> None:
    config = write_config(tmp_path, database_url)
    result = run("db", "upgrade", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from storage.migrate import head_of_files

    assert f"database schema at {head_of_files('research')}" in result.stdout


def test_two_imports_at_once_store_everything_once(tmp_path: Path, database_url: str) -> None:
    """Two processes with two workers each race on the same files: unique keys decide, nothing doubles."""
    datasets = factory.make_corpus(n_patients=4, studies_per_patient=2, per_series=3)
    folder = tmp_path / "in"
    factory.write_files(datasets, folder)
    config = write_config(tmp_path, database_url)
    run("db", "upgrade", "--config", str(config), cwd=tmp_path)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PACS_BRIDGE_")}
    command = [
        sys.executable,
        "-m",
        "bridge",
        "import",
        str(folder),
        "--project",
        "lung",
        "--config",
        str(config),
        "--workers",
        "2",
        "--json",
    ]
    with (
        subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE, text=True) as first,
        subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE, text=True) as second,
    ):
        outputs = [json.loads(first.communicate(timeout=300)[0]), json.loads(second.communicate(timeout=300)[0])]
    assert first.returncode == second.returncode == 0
    assert sum(o["stored"] for o in outputs) == len(datasets) == 24
    assert sum(o["duplicates"] for o in outputs) == 24 and not any(o["failed"] for o in outputs)
    status = json.loads(run("status", "--config", str(config), "--json", cwd=tmp_path).stdout)
    assert status["projects"] == [
        {"name": "lung", "subjects": 4, "timepoints": 8, "series": 8, "instances": 24, "quarantined": 0}
    ]
