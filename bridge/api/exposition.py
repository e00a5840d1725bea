"""/metrics: the counts of every process of `serve` (prometheus-client's multiprocess files), and the spool's
depth read when asked."""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from bridge.process.metrics import MULTIPROCESS_ENV, metrics
from storage.spool import Spool


class SpoolDepth(Collector):
    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "pacs_bridge_spool_depth", "Instances acknowledged, not yet ingested.", self.spool.backlog()
        )


def exposition(spool: Spool) -> tuple[bytes, str]:
    own = CollectorRegistry()
    own.register(SpoolDepth(spool))
    if os.environ.get(MULTIPROCESS_ENV):
        MultiProcessCollector(own)  # type: ignore[no-untyped-call]
        return generate_latest(own), CONTENT_TYPE_LATEST
    metrics()  # a lone process (the app run without `serve`): its own counts
    return generate_latest(REGISTRY) + generate_latest(own), CONTENT_TYPE_LATEST
