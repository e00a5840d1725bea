"""The house rules of the layout (DESIGN.md), read from the source: storage knows persistence only, deid does
no I/O, no import arrow points from a lower layer up to a higher one, no module outgrows one job."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# bridge's packages and modules by layer, lowest first: a module imports only its own layer and those below
LAYERS: list[set[str]] = [
    {"bridge.errors", "bridge.settings", "bridge.keys", "bridge.process", "bridge.dicom"},
    {"bridge.deid", "bridge.seg"},
    {
        "bridge.annotations",
        "bridge.ingest",
        "bridge.timepoints",
        "bridge.remotes",
        "bridge.cohorts",
        "bridge.search",
        "bridge.export",
        "bridge.access",
    },
    {"bridge.pull", "bridge.wiring", "bridge.delivery"},
    # the edges: protocol in, one service call, status out
    {"bridge.dimse", "bridge.api", "bridge.dicomweb", "bridge.console"},
    {"bridge.serve"},  # the composition root
    {"bridge.cli", "bridge.__main__"},
]


def modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


def name_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> Iterator[str]:
    """Every module `path` imports, at any depth (function-level and TYPE_CHECKING imports included)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def layer_of(module: str) -> int | None:
    for number, layer in enumerate(LAYERS):
        if any(module == unit or module.startswith(unit + ".") for unit in layer):
            return number
    return None


def test_every_bridge_module_has_a_layer() -> None:
    assert [name_of(p) for p in modules("bridge") if layer_of(name_of(p)) is None] == ["bridge"]


@pytest.mark.parametrize("path", modules("bridge"), ids=name_of)
def test_no_import_points_up(path: Path) -> None:
    own = layer_of(name_of(path))
    if own is None:
        return
    upward = {m for m in imported(path) if (layer := layer_of(m)) is not None and layer > own}
    assert not upward, f"{name_of(path)} (layer {own}) imports from a higher layer: {sorted(upward)}"


@pytest.mark.parametrize("path", modules("storage"), ids=name_of)
def test_storage_knows_persistence_only(path: Path) -> None:
    forbidden = ("bridge", "pynetdicom", "fastapi", "apscheduler", "pydicom", "dicomweb_client")
    found = {m for m in imported(path) if m.split(".")[0] in forbidden}
    assert not found, f"{name_of(path)} imports {sorted(found)}"


@pytest.mark.parametrize("path", modules("bridge/deid"), ids=name_of)
def test_deid_does_no_io(path: Path) -> None:
    forbidden = ("storage", "sqlalchemy", "sqlmodel", "os", "io", "socket", "shutil", "tempfile", "pathlib")
    found = {m for m in imported(path) if m.split(".")[0] in forbidden}
    found |= {m for m in imported(path) if m.startswith("bridge.") and layer_of(m) != layer_of("bridge.deid")}
    found -= {m for m in found if m.startswith(("bridge.dicom.elements", "bridge.dicom.encoding"))}
    found -= {m for m in found if m.startswith(("bridge.dicom.implementation", "bridge.process.caches"))}
    assert not found, f"{name_of(path)} imports {sorted(found)}"


@pytest.mark.parametrize("path", modules("bridge") + modules("storage"), ids=name_of)
def test_no_module_outgrows_one_job(path: Path) -> None:
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 600
