"""Logging for every process of the service: one format, and the libraries that would log PHI kept quiet."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # pynetdicom logs dataset attributes (original UIDs, IDs) at DEBUG and every request at INFO
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
