"""Fixtures starting a real `pacs-bridge serve` process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dimse.harness import BridgeProcess, free_port, write_serve_config

StartBridge = Callable[..., BridgeProcess]


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
