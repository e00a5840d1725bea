"""The DICOMweb tests' bridge: one `serve` per module and database kind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dicomweb.served import Served, serve_trial


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve_trial(request, tmp_path_factory)
