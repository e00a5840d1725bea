"""C-STORE: check the received instance, make it durable in the spool, answer. Nothing slower.

The association writes the dataset to a spool file as it arrives (`receive`: no decode, bounded memory, the
CRC-32 of the spool's marker computed as the bytes pass); `store` admits it with one parse of the elements
the check looks at, an fsync and a rename, and leaves it for the ingest workers. Success is answered only
once the entry is durable; a refused instance is quarantined and answered with a failure status, mapped from
the refusal here (`status_for`).
"""

from __future__ import annotations

import logging
import shutil

from bridge.dicom import status
from bridge.dicom.files import read_instance, received_file_header
from bridge.dicom.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from bridge.errors import MalformedInstance, Refused
from bridge.ingest.admission import CHECKED_TAGS, check_instance, check_request
from bridge.ingest.service import IngestService
from bridge.process.metrics import metrics
from storage.spool import IncomingFile, Spool

logger = logging.getLogger(__name__)


def status_for(problem: Exception) -> int:
    """The failure status for a refused instance: A9xx when it contradicts its SOP class, C0xx otherwise."""
    if isinstance(problem, Refused) and problem.mismatch:
        return status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(problem, (Refused, MalformedInstance)):
        return status.CANNOT_UNDERSTAND
    return status.PROCESSING_FAILURE


class StoreService:
    def __init__(self, *, spool: Spool, ingest: IngestService, min_free_bytes: int) -> None:
        self.spool = spool
        self.ingest = ingest  # refusals are quarantined through it; the rest is the workers'
        self.min_free_bytes = min_free_bytes

    def has_space(self) -> bool:
        """Whether the spool's disk is above `dimse.min_free_space_mb` (checked before writing anything)."""
        if shutil.disk_usage(self.spool.incoming).free >= self.min_free_bytes:
            return True
        logger.error("free space below dimse.min_free_space_mb: refusing instances (0xA700)")
        return False

    def receive(
        self, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, calling_ae: str
    ) -> IncomingFile:
        """A spool file for a C-STORE's dataset: the file meta information of a Part 10 file (PS3.10 7.1),
        to which the association appends the dataset as it arrives."""
        return self.spool.receive(
            received_file_header(
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                transfer_syntax_uid=transfer_syntax_uid,
                source_ae_title=calling_ae,
                implementation_class_uid=str(IMPLEMENTATION_CLASS_UID),
                implementation_version=IMPLEMENTATION_VERSION,
            )
        )

    def store(
        self, incoming: IncomingFile, *, project: str, calling_ae: str, sop_class_uid: str, sop_instance_uid: str
    ) -> int:
        """One received C-STORE dataset, complete in `incoming`: the status to answer with. Admitted, the
        file is renamed into the spool; refused, it is quarantined as a copy and removed."""
        incoming.close()
        answer = self._admit(incoming, project, calling_ae, sop_class_uid, sop_instance_uid)
        if answer != status.SUCCESS:
            incoming.path.unlink(missing_ok=True)
        return answer

    def _admit(
        self, incoming: IncomingFile, project: str, calling_ae: str, sop_class_uid: str, sop_instance_uid: str
    ) -> int:
        path, source = incoming.path, f"c-store:{calling_ae}"
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
            return status_for(problem)
        except OSError:
            logger.exception("could not read a received instance")
            return status.PROCESSING_FAILURE
        try:
            # the CRC computed as the file was written: the spool then needs one disk flush, not two
            self.spool.admit(path, project=project, source=source, crc=incoming.crc)  # the workers find it there
        except OSError:  # not durable, so not acknowledged: the peer sends it again (a resend is idempotent)
            logger.exception("could not make a received instance durable in the spool")
            return status.OUT_OF_RESOURCES
        metrics().received.labels("c-store").inc()
        return status.SUCCESS
