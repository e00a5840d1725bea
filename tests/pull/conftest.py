"""Fixtures and helpers of the pull tests: an Orthanc with a corpus, a bridge configuration, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import factory
from tests.pull.orthanc import OrthancServer, running_orthanc
from tests.serve_process import config_head

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    with running_orthanc(tmp_path / "orthanc") as server:
        yield server


@pytest.fixture
def corpus(orthanc: OrthancServer, tmp_path: Path) -> list:  # type: ignore[type-arg]
    """Three patients x two studies (CT), loaded into Orthanc."""
    datasets = factory.make_corpus(n_patients=3, studies_per_patient=2, per_series=4)
    orthanc.upload(factory.write_files(datasets, tmp_path / "corpus"))
    return datasets


def write_config(folder: Path, database_url: str, orthanc: OrthancServer, extra: str = "") -> Path:
    config = folder / "bridge.toml"
    config.write_text(
        config_head(folder, database_url)
        + f"""
[projects.lung]
subject_prefix = "LUNG"

[[remotes]]
name = "hospital"
dicomweb_url = "{orthanc.dicomweb_url}"
ae_title = "{orthanc.aet}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
timeout = 20
retries = 1
{extra}
"""
    )
    return config


def bridge(*args: str, config: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PACS_BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args, "--config", str(config)],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def status(config: Path) -> dict[str, int]:
    result = bridge("status", "--json", config=config)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["projects"][0]  # type: ignore[no-any-return]
