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

from bridge.settings import Settings
from bridge.wiring import Runtime
from tests.serve_process import BridgeProcess, StartBridge, free_port, write_serve_config

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
            "annotations_dir": tmp_path / "annotations",
        },
        security={"secret": "test-secret-0123456789abcdef"},
        projects=projects,
    )


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    opened = Runtime.start(settings)
    try:
        yield opened
    finally:
        opened.close()


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines dciodvfy (dicom3tools, the reference validator) reports for a file."""
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy is not installed: run the tests through ./scripts/test.sh")
    completed = subprocess.run(
        ["dciodvfy", "-new", "-filename", str(path)], capture_output=True, text=True, errors="replace", timeout=60
    )
    return [line for line in (completed.stdout + completed.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture
def start_bridge(tmp_path: Path) -> Iterator[StartBridge]:
    """Start `serve` with a test configuration; every process started is stopped (or killed) afterwards."""
    started: list[BridgeProcess] = []

    def start(
        database_url: str | None = None,
        extra: str = "",
        dimse: str = "",
        port: int | None = None,
        restart: BridgeProcess | None = None,
    ) -> BridgeProcess:
        if restart is not None:
            bridge = BridgeProcess(config=restart.config, port=restart.port, log=restart.log)
        else:
            port = port or free_port()
            url = database_url or f"sqlite:///{tmp_path / 'bridge.db'}"
            config = write_serve_config(tmp_path, url, port, extra=extra, dimse=dimse)
            bridge = BridgeProcess(config=config, port=port, log=tmp_path / "serve.log")
        started.append(bridge)
        return bridge.start()

    yield start
    for bridge in started:
        if bridge.process is not None and bridge.process.poll() is None:
            try:
                bridge.stop(timeout=30)
            except Exception:
                bridge.kill()
