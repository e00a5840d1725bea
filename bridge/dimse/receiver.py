"""C-STORE: check the received instance, make it durable in the spool, answer. Nothing slower.

The association writes the dataset to a file in the spool's incoming folder as it arrives (no decode,
bounded memory); this admits it with one header parse, an fsync and a rename, and leaves it for the ingest
workers.
Success is answered only once the entry is durable; a refused instance is quarantined and answered with a
failure status.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from bridge.admission import CHECKED_TAGS, Refused, check_instance, check_request
from bridge.dicomio import MalformedInstance, read_instance
from bridge.dimse import status
from bridge.ingest import IngestService
from bridge.spool import Spool

logger = logging.getLogger(__name__)


class StoreReceiver:
    def __init__(self, *, spool: Spool, ingest: IngestService, min_free_bytes: int) -> None:
        self.spool = spool
        self.ingest = ingest
        self.min_free_bytes = min_free_bytes

    def has_space(self) -> bool:
        """Whether the spool's disk is above `dimse.min_free_space_mb` (checked before writing anything)."""
        if shutil.disk_usage(self.spool.incoming).free >= self.min_free_bytes:
            return True
        logger.error("free space below dimse.min_free_space_mb: refusing instances (0xA700)")
        return False

    def store(
        self,
        *,
        project: str,
        calling_ae: str,
        path: Path,
        sop_class_uid: str,
        sop_instance_uid: str,
        crc: int | None = None,
    ) -> int:
        """One received C-STORE dataset in `path`: the status to answer with. `crc`: the CRC-32 of the file
        after its preamble, when the writer computed it (the spool then needs one disk flush, not two)."""
        source = f"c-store:{calling_ae}"
        try:
            ds = read_instance(path, tags=CHECKED_TAGS)  # the rest is read by the ingest worker
            check_instance(ds)
            check_request(ds, sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid)
        except (MalformedInstance, Refused) as problem:
            try:
                self.ingest.refuse(path, project=project, reason=str(problem), source=source)
            except Exception:  # the database is down, say: not kept, so not acknowledged either
                logger.exception("could not quarantine a refused instance")
                return status.PROCESSING_FAILURE
            return status.status_for(problem)
        except OSError:
            logger.exception("could not read a received instance")
            return status.PROCESSING_FAILURE
        try:
            self.spool.admit(path, project=project, source=source, crc=crc)  # the workers find it there
        except OSError:  # not durable, so not acknowledged: the peer sends it again (a resend is idempotent)
            logger.exception("could not make a received instance durable in the spool")
            return status.OUT_OF_RESOURCES
        return status.SUCCESS
