"""Logging for every process of the service: one format, and the libraries that would log PHI kept quiet."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # pynetdicom logs dataset attributes (original UIDs, IDs) at DEBUG and every request at INFO
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # dicomweb-client logs the original study UIDs it searches; urllib3 logs request URLs (UIDs in paths)
    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
