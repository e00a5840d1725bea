"""What the benchmarks share: the repository's DICOM factory, the CLI, an environment without overrides."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def load_repo_module(relative: str, name: str) -> ModuleType:
    """Import a module of the repository by path (``tests`` is not an installed package; it needs no pytest)."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


def load_factory() -> ModuleType:
    """The repository's DICOM factory, ``tests/factory.py``."""
    return load_repo_module("tests/factory.py", "pacs_bridge_test_factory")


def cli_path() -> str:
    """The ``pacs-bridge`` script next to this interpreter (the venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "pacs-bridge"
    if beside.is_file():
        return str(beside)
    found = shutil.which("pacs-bridge")
    if found is None:
        raise SystemExit("pacs-bridge not found: run with the project's venv (.venv/bin/python bench/NAME.py)")
    return found


def clean_env() -> dict[str, str]:
    """The environment without PACS_BRIDGE_* variables, so the benchmark config is the only source."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("PACS_BRIDGE_")}


@dataclass(frozen=True)
class Timing:
    """One measured run over a corpus."""

    label: str
    seconds: float
    instances: int
    size_bytes: int

    @property
    def rate(self) -> float:
        """Instances per second."""
        return self.instances / self.seconds

    @property
    def mb_per_s(self) -> float:
        """Input megabytes (10^6 bytes) per second."""
        return self.size_bytes / 1e6 / self.seconds


def clean_up(workdir: Path, keep: bool) -> None:
    """Remove a benchmark's working folder, unless asked to keep it (then say where it is)."""
    if keep:
        print(f"\nkept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def config_head(folder: Path) -> str:
    """The TOML a benchmark's bridge configuration starts with: SQLite, every folder and the secret under
    `folder` (nothing lands in the repository's var/)."""

    def under(name: str) -> str:
        return json.dumps(str(folder / name))

    return f"""log_level = "INFO"
[database]
url = {json.dumps(f"sqlite:///{folder / 'bridge.db'}")}
[storage]
store_dir = {under("store")}
quarantine_dir = {under("quarantine")}
spool_dir = {under("spool")}
annotations_dir = {under("annotations")}
[security]
secret_file = {under("secret.key")}
"""
