"""C-STORE: check the received instance, make it durable in the spool, answer. Nothing slower.

pynetdicom writes the dataset to a file in the spool's incoming folder as it arrives (no decode, bounded
memory); this admits it with one header parse, an fsync and a rename, and leaves it for the ingest workers.
Success is answered only once the entry is durable; a refused instance is quarantined and answered with a
failure status.
"""

from __future__ import annotations

import logging
import shutil
import weakref
from pathlib import Path
from typing import Any

from bridge.admission import Refused, check_instance, check_request
from bridge.dicomio import MalformedInstance, read_instance
from bridge.dimse import status
from bridge.ingest import IngestService
from bridge.spool import Spool

logger = logging.getLogger(__name__)


class StoreReceiver:
    def __init__(
        self,
        *,
        spool: Spool,
        ingest: IngestService,
        min_free_bytes: int,
    ) -> None:
        self.spool = spool
        self.ingest = ingest
        self.min_free_bytes = min_free_bytes
        self._projects: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    def route(self, assoc: Any, project: str) -> None:
        """Remember the project the association was accepted for (see `acceptance.install`)."""
        self._projects[assoc] = project

    def project_of(self, assoc: Any) -> str:
        return self._projects[assoc]

    def store(self, *, assoc: Any, path: Path, sop_class_uid: str, sop_instance_uid: str) -> int:
        """One C-STORE: the status to answer with."""
        project = self.project_of(assoc)
        source = f"c-store:{str(assoc.requestor.ae_title).strip()}"
        if shutil.disk_usage(self.spool.root).free < self.min_free_bytes:
            logger.error("free space below dimse.min_free_space_mb: refusing instances (0xA700)")
            return status.OUT_OF_RESOURCES
        try:
            ds = read_instance(path)
            check_instance(ds)
            check_request(ds, sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid)
        except (MalformedInstance, Refused) as problem:
            self.ingest.refuse(path, project=project, reason=str(problem), source=source)
            return status.status_for(problem)
        self.spool.admit(path, project=project, source=source)  # the workers find it there
        return status.SUCCESS
