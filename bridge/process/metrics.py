"""The service's Prometheus metrics, counted in whichever process does the work (listeners, ingest workers,
the schedules) and served by the HTTP process.

`serve` points PROMETHEUS_MULTIPROC_DIR at an empty folder before it starts any process: prometheus-client
then keeps each process's values in a file there, and the HTTP process adds them up. That variable must be
set before prometheus-client is first imported, so this module imports it only when a metric is first
counted. Outside `serve` (import, pull) the counts stay in the process and are simply dropped. Labels never
hold identifiers: intake kinds, outcomes, reason classes.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


def share_between_processes(directory: Path) -> None:
    """Empty `directory` and make every process started from now on count into it."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROCESS_ENV] = str(directory.resolve())


_created: list[SimpleNamespace] = []
_creating = threading.Lock()


def metrics() -> SimpleNamespace:
    """The metrics, created on first use (once: listener threads may ask at the same moment)."""
    if _created:
        return _created[0]
    with _creating:
        if not _created:
            _created.append(_create())
    return _created[0]


def _create() -> SimpleNamespace:
    from prometheus_client import Counter, Histogram

    return SimpleNamespace(
        received=Counter("pacs_bridge_instances_received", "Instances received and acknowledged.", ["intake"]),
        ingested=Counter("pacs_bridge_instances_ingested", "Instances ingested, by outcome.", ["outcome"]),
        quarantined=Counter("pacs_bridge_instances_quarantined", "Instances quarantined, by reason.", ["reason"]),
        latency=Histogram(
            "pacs_bridge_ingest_latency_seconds",
            "From acknowledged (in the spool) to indexed.",
            buckets=LATENCY_BUCKETS,
        ),
        pull_runs=Counter("pacs_bridge_pull_runs", "Scheduled pull runs, by result.", ["result"]),
    )


def reason_class(reason: str) -> str:
    """A refusal's reason as one of a few words (the reasons themselves stay in the quarantine's index)."""
    text = reason.lower()
    for word, name in (
        ("burned", "burned-in"),
        ("truncated", "truncated"),
        ("unparseable", "unparseable"),
        ("differs", "mismatch"),
        ("missing", "missing-attribute"),
        ("invalid", "invalid-value"),
        ("too long", "invalid-value"),
    ):
        if word in text:
            return name
    return "other"
