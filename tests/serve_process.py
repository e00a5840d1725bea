"""A real `pacs-bridge serve` process for tests, and the real DICOM clients that talk to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # Debian's DCMTK leaves Nagle's algorithm on otherwise


def config_head(folder: Path, database_url: str, log_level: str = "INFO", http_port: int | None = None) -> str:
    """The TOML every test configuration starts with: database, folders and secret under `folder`, the HTTP
    API on a free loopback port."""
    return f"""
log_level = "{log_level}"
[http]
host = "127.0.0.1"
port = {http_port or free_port()}
metrics_dir = "{folder / "metrics"}"
[database]
url = "{database_url}"
[storage]
store_dir = "{folder / "store"}"
quarantine_dir = "{folder / "quarantine"}"
spool_dir = "{folder / "spool"}"
annotations_dir = "{folder / "annotations"}"
exports_dir = "{folder / "exports"}"
[security]
secret_file = "{folder / "secret.key"}"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_serve_config(folder: Path, database_url: str, port: int, extra: str = "", dimse: str = "") -> Path:
    """A configuration with two projects: LUNG (called AE 'LUNG', callers restricted) and OPEN (anyone)."""
    config = folder / "bridge.toml"
    defaults = {
        "host": '"127.0.0.1"',
        "port": str(port),
        "ae_title": '"BRIDGE"',
        "default_project": '"open"',
        "acse_timeout": "5",
        "dimse_timeout": "20",
        "network_timeout": "20",
        "min_free_space_mb": "0",
        "workers": "2",
    }
    overridden = {line.split("=")[0].strip() for line in dimse.splitlines() if "=" in line}
    dimse_keys = "\n".join(f"{k} = {v}" for k, v in defaults.items() if k not in overridden)
    config.write_text(
        config_head(folder, database_url)
        + f"""
[dimse]
{dimse_keys}
{dimse}
[projects.lung]
subject_prefix = "LUNG"
[projects.lung.dimse]
ae_title = "LUNG"
allowed_callers = [{{ae_title = "MODALITY"}}, {{ae_title = "PACS", addresses = ["127.0.0.0/8"]}},
                   {{ae_title = "ELSEWHERE", addresses = ["10.9.9.9"]}}]
[projects.open]
subject_prefix = "OPEN"
{extra}
"""
    )
    return config


@dataclass
class BridgeProcess:
    """`python -m bridge serve` in its own process group, with its log in a file."""

    config: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 60) -> BridgeProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PACS_BRIDGE_")}
        environment.update(self.env)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "serve", "--config", str(self.config)],
                cwd=REPOSITORY,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}:\n{self.log.read_text()}")
            if "listening on" in self.log.read_text():
                return self
            time.sleep(0.1)
        raise TimeoutError(f"serve did not start:\n{self.log.read_text()}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the clean stop."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group: the server and its workers die mid-work."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def status(self) -> dict[str, int]:
        result = subprocess.run(
            [sys.executable, "-m", "bridge", "status", "--json", "--config", str(self.config)],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("PACS_BRIDGE_")},
        )
        assert result.returncode == 0, result.stderr
        return {p["name"]: p for p in json.loads(result.stdout)["projects"]}  # type: ignore[misc]

    def wait_for(self, project: str, instances: int, timeout: float = 120) -> dict[str, int]:
        """Poll `status` until the project holds `instances` instances (ingest runs after the answer)."""
        deadline = time.monotonic() + timeout
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            counts = self.status().get(project, {})  # type: ignore[assignment]
            if counts.get("instances", 0) >= instances:
                return counts
            time.sleep(0.3)
        raise TimeoutError(f"{project}: {counts} after {timeout} s, expected {instances} instances")


def spool_files(folder: Path) -> list[Path]:
    return [p for p in (folder / "spool").rglob("*.dcm") if ".incoming" not in p.parts]


StartBridge = Callable[..., BridgeProcess]
