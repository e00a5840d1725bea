"""C-STORE: check the received instance, make it durable in the spool, answer. Nothing slower.

The association writes the dataset to a spool file as it arrives (`receive`: no decode, bounded memory, the
CRC-32 of the spool's marker computed as the bytes pass); `store` admits it with one parse of the elements
the check looks at, an fsync and a rename, and leaves it for the ingest workers. Success is answered only
once the entry is durable; a refused instance is quarantined and answered with a failure status, mapped from
the refusal by `admission.status_for`.
"""

from __future__ import annotations

import logging
import shutil
from functools import partial

from bridge.dicom.files import received_file_header
from bridge.dicom.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from bridge.ingest.admission import check_request
from bridge.ingest.intake import admit
from bridge.ingest.service import IngestService
from storage.spool import IncomingFile, Spool

logger = logging.getLogger(__name__)


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
        return admit(
            incoming,
            spool=self.spool,
            ingest=self.ingest,
            project=project,
            source=f"c-store:{calling_ae}",
            intake="c-store",
            check=partial(check_request, sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid),
        ).status
