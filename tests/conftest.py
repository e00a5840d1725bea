"""Shared fixtures: a database of each supported kind, settings pointing into tmp_path, a runtime."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bridge.runtime import Runtime, open_runtime
from bridge.settings import Settings

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_schema_url() -> Iterator[str]:
    """A fresh PostgreSQL schema per test, dropped afterwards (fails, never skips, without PostgreSQL)."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that uses the database runs on SQLite (the default) and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
    else:
        yield from postgres_schema_url()


def make_settings(tmp_path: Path, database_url: str, **projects: dict) -> Settings:  # type: ignore[type-arg]
    projects = projects or {
        "lung": {"subject_prefix": "LUNG", "trial": {"sponsor_name": "Onco Group", "protocol_id": "LUNG-1"}},
        "liver": {"subject_prefix": "LIV"},
    }
    return Settings(
        database={"url": database_url},
        storage={
            "store_dir": tmp_path / "store",
            "quarantine_dir": tmp_path / "quarantine",
            "spool_dir": tmp_path / "spool",
        },
        security={"secret": "test-secret-0123456789abcdef"},
        projects=projects,
    )


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    opened = open_runtime(settings, actor="test")
    try:
        yield opened
    finally:
        opened.close()


def config_head(folder: Path, database_url: str, log_level: str = "INFO") -> str:
    """The TOML every test configuration starts with: database, folders and secret under `folder`."""
    return f"""
log_level = "{log_level}"
[database]
url = "{database_url}"
[storage]
store_dir = "{folder / "store"}"
quarantine_dir = "{folder / "quarantine"}"
spool_dir = "{folder / "spool"}"
[security]
secret_file = "{folder / "secret.key"}"
"""


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines dciodvfy (dicom3tools, the reference validator) reports for a file."""
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy is not installed: run the tests through ./scripts/test.sh")
    completed = subprocess.run(
        ["dciodvfy", "-new", "-filename", str(path)], capture_output=True, text=True, errors="replace", timeout=60
    )
    return [line for line in (completed.stdout + completed.stderr).splitlines() if line.startswith("Error")]
