"""A received file made durable in the spool, or refused into quarantine: the one step C-STORE and STOW-RS
share before they answer.

The file has arrived in the spool's incoming folder (written as it came, its CRC computed on the way). One
parse of the elements the checks need, the checks, then either the spool's rename and fsync (success: the
workers de-identify and index it) or the quarantine (a failure status mapped from the refusal). Nothing is
answered as stored before it is durable; a refused file is kept in quarantine before it is answered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from pydicom.dataset import FileDataset

from bridge.annotations.seg_references import SEG_SOP_CLASS
from bridge.dicom import status
from bridge.dicom.elements import tag_of, text_of
from bridge.dicom.files import read_instance
from bridge.errors import MalformedInstance, Refused
from bridge.ingest.admission import CHECKED_TAGS, check_instance, status_for
from bridge.ingest.service import IngestService
from bridge.process.metrics import metrics
from storage.spool import IncomingFile, Spool

logger = logging.getLogger(__name__)
_UIDS = tuple(tag_of(k) for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"))


@dataclass(frozen=True)
class Admitted:
    """The status to answer, and the instance's UIDs as received (those that could be read)."""

    status: int
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None


def admit(
    incoming: IncomingFile,
    *,
    spool: Spool,
    ingest: IngestService,
    project: str,
    source: str,
    intake: str,
    check: Callable[[FileDataset], None] | None = None,
) -> Admitted:
    """Admit a complete received file (closed here); `check` adds the request's own checks (Refused)."""
    incoming.close()
    path = incoming.path
    answer = Admitted(status.PROCESSING_FAILURE)
    try:
        ds = read_instance(path, tags=CHECKED_TAGS)  # the rest is read by the ingest worker
        answer = Admitted(status.PROCESSING_FAILURE, *(text_of(ds, tag) or None for tag in _UIDS))
        check_instance(ds)
        if check is not None:
            check(ds)
        if answer.sop_class_uid == SEG_SOP_CLASS:  # its references must be indexed, in the series it names
            ingest.check_received_seg(path, project)
    except (MalformedInstance, Refused) as problem:
        try:
            ingest.refuse(path, project=project, reason=str(problem), source=source)
            answer = replace(answer, status=status_for(problem))
        except Exception:  # the database is down, say: not kept, so not acknowledged either
            logger.exception("could not quarantine a refused instance")
        incoming.discard()
        return answer
    except OSError:
        logger.exception("could not read a received instance")
        incoming.discard()
        return answer
    try:
        # the CRC computed as the file was written: the spool then needs one disk flush, not two
        spool.admit(path, project=project, source=source, crc=incoming.crc)  # the workers find it there
    except OSError:  # not durable, so not acknowledged: the peer sends it again (a resend is idempotent)
        logger.exception("could not make a received instance durable in the spool")
        incoming.discard()
        return replace(answer, status=status.OUT_OF_RESOURCES)
    metrics().received.labels(intake).inc()
    return replace(answer, status=status.SUCCESS)
