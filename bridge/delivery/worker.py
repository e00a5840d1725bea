"""The outbox worker of `serve`: claims due deliveries, builds each SEG, re-identifies it when the
destination asks for that, sends it, and marks the outcome.

A remote that is down (refused connection, timeout, out of resources, 5xx) is retried with backoff, doubling
from `deliveries.first_retry_seconds` up to `max_retry_seconds`, until `max_attempts`; a refusal that a retry
cannot fix (a failure status, a UID the vault does not know) fails the delivery at once, with its reason,
for `pacs-bridge deliveries retry ID` once fixed.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import tempfile
import threading
from pathlib import Path

from pydicom.dataset import Dataset

from bridge.annotations.seg_intake import link_stored
from bridge.annotations.seg_references import DELIVERY_SOURCE
from bridge.deid import values
from bridge.deid.table import Option
from bridge.delivery import outbox
from bridge.delivery.reidentify import reidentify
from bridge.delivery.segs import BuiltSeg, build_version_seg, seg_uid
from bridge.errors import AnnotationError, RemoteError, RetriableError, redact
from bridge.ingest.service import Outcome
from bridge.settings import RESEARCH, RemoteSettings, SegDestinationSettings, Settings
from bridge.wiring import Runtime
from storage import queries
from storage.audit import record_event
from storage.models.annotations import Delivery
from storage.vault import Identity

logger = logging.getLogger(__name__)


class DeliveryWorker:
    """Works the outbox for one process (`serve`): `run_once` sends at most one due delivery."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.actor = "serve:delivery"
        self.annotations = runtime.annotations()
        self._last_built: tuple[tuple[int, int], BuiltSeg] | None = None

    def run_once(self) -> bool:
        """True when a delivery was attempted (another may be due at once)."""
        row = outbox.claim(
            self.runtime.database, owner=self.owner, lease_seconds=self.settings.deliveries.lease_seconds
        )
        if row is None:
            return False
        assert row.id is not None
        try:
            series_uid = self._deliver(row)
        except RetriableError as error:
            self._retry_or_fail(row, str(error))
        except (RemoteError, AnnotationError, ValueError) as error:
            logger.error("delivery %d failed: %s", row.id, error)
            outbox.failed_attempt(self.runtime.database, row.id, error=str(error), retry_in=None, actor=self.actor)
        except Exception as error:  # unexpected: kept and retried, never lost; its text may quote a UID
            logger.error("delivery %d: unexpected %s: %s", row.id, type(error).__name__, redact(str(error))[:300])
            self._retry_or_fail(row, f"unexpected error: {type(error).__name__}")
        else:
            outbox.delivered(self.runtime.database, row.id, seg_series_uid=series_uid, actor=self.actor)
            logger.info(
                "delivery %d of annotation %d v%d to %s done", row.id, row.annotation_id, row.version, row.destination
            )
        return True

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: send what is due, wait `poll_seconds` when nothing is (and then link SEGs that came
        before their images)."""
        tried: dict[str, int] = {}
        while not stop.is_set():
            try:
                busy = self.run_once()
                if not busy:
                    link_stored(self.annotations, tried)
            except Exception:  # the database is down, say: try again later
                logger.exception("the outbox could not be read")
                busy = False
            if not busy:
                stop.wait(self.settings.deliveries.poll_seconds)

    def _retry_or_fail(self, row: Delivery, error: str) -> None:
        assert row.id is not None
        policy = self.settings.deliveries
        retry_in = None
        if row.attempts < policy.max_attempts:
            retry_in = min(policy.max_retry_seconds, policy.first_retry_seconds * 2 ** (row.attempts - 1))
        logger.warning(
            "delivery %d: %s (attempt %d%s)",
            row.id,
            error,
            row.attempts,
            f", again in {retry_in:.0f} s" if retry_in is not None else ", giving up",
        )
        outbox.failed_attempt(self.runtime.database, row.id, error=error, retry_in=retry_in, actor=self.actor)

    # -- one delivery -------------------------------------------------------------------------------------
    def _deliver(self, row: Delivery) -> str:
        """Send `row`'s SEG; the research-side Series Instance UID of what was sent."""
        with self.runtime.database.reading() as session:
            project = queries.project_name_of(session, row.project_id)
        context = self.runtime.projects.get(project)
        if context is None:
            raise AnnotationError(f"project {project!r} is no longer configured")
        destination = self._destination(project, row.destination)
        if destination.remote == RESEARCH:
            return self._into_research(row, project, context.key)
        built = self._built(row, context.key)
        seg = built.dataset  # the research copy, as the research store has it
        research_series_uid = str(seg.SeriesInstanceUID)
        if destination.mode == "reidentified":
            seg = copy.deepcopy(seg)
            self._reidentify(seg, row, project, built.record.subject_code, context.key)
        self._send(self.settings.remote(destination.remote), destination, seg)
        return research_series_uid  # never the hospital's copy's: that would link the two sides

    def _built(self, row: Delivery, key: bytes) -> BuiltSeg:
        """The version's SEG, built once for all its destinations (they are claimed one after the other)."""
        wanted = (row.annotation_id, row.version)
        if self._last_built is None or self._last_built[0] != wanted:
            built = build_version_seg(self.annotations, key=key, annotation_id=row.annotation_id, version=row.version)
            self._last_built = (wanted, built)
        return self._last_built[1]

    def _destination(self, project: str, name: str) -> SegDestinationSettings:
        for destination in self.settings.project(project).seg_destinations:
            if destination.remote == name:
                return destination
        raise AnnotationError(f"seg destination {name!r} is no longer configured for project {project!r}")

    def _into_research(self, row: Delivery, project: str, key: bytes) -> str:
        """The SEG into the bridge's own store and index (de-identified; DICOMweb and the viewer serve it)."""
        built = self._built(row, key)
        ingest = self.runtime.ingest(self.actor)
        folder = self.settings.storage.annotations_dir / ".outgoing"  # de-identified, beside the masks
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, suffix=".seg.tmp")
        os.close(fd)
        path = Path(name)
        try:
            built.dataset.save_as(path, enforce_file_format=True)
            result = ingest.ingest(path, project=project, source=f"{DELIVERY_SOURCE}:{row.id}")
        finally:
            path.unlink(missing_ok=True)
        if result.outcome is Outcome.QUARANTINED:
            raise AnnotationError(f"the bridge's own store refused the SEG: {result.reason}")
        return str(built.dataset.SeriesInstanceUID)  # stored as built: it is research-side already

    def _reidentify(self, seg: Dataset, row: Delivery, project: str, subject_code: str, key: bytes) -> None:
        context = self.runtime.projects[project]
        max_days = context.settings.deid.max_date_shift_days
        shifted = Option.RETAIN_MODIFIED_DATES in context.policy.options

        def date_offset(identity: Identity) -> int:
            if not shifted:
                return 0
            return values.date_offset_days(key, values.patient_key(key, identity.issuer, identity.patient_id), max_days)

        failure: AnnotationError | None = None
        with self.runtime.database.unit_of_work() as work:  # committed either way: the vault reads are audited
            try:
                reidentify(
                    seg,
                    project=project,
                    subject_code=subject_code,
                    date_offset=date_offset,
                    work=work,
                    cipher=self.runtime.cipher,
                    actor=self.actor,
                    new_series_uid=seg_uid(key, row.annotation_id, row.version, "series", "hospital"),
                    new_instance_uid=seg_uid(key, row.annotation_id, row.version, "instance", "hospital"),
                )
            except AnnotationError as error:
                failure = error
                record_event(
                    work.research,
                    actor=self.actor,
                    action="delivery.reidentification_failed",
                    project_id=row.project_id,
                    object=f"delivery {row.id}",
                    detail=str(error)[:1024],
                )
        if failure is not None:
            raise failure

    def _send(self, remote: RemoteSettings, destination: SegDestinationSettings, seg: Dataset) -> None:
        protocol = destination.protocol or ("c-store" if remote.ae_title else "stow-rs")
        if protocol == "c-store":
            from bridge.remotes.dimse import DimseRemote

            if remote.ae_title is None:
                raise AnnotationError(f"remote {remote.name} has no AE title for C-STORE: set protocol = 'stow-rs'")
            DimseRemote(remote, calling_ae=self.settings.dimse.ae_title).store(seg)
        else:
            from bridge.remotes.dicomweb import DicomwebRemote

            if remote.dicomweb_url is None:
                raise AnnotationError(f"remote {remote.name} has no dicomweb_url for STOW-RS")
            remote_client = DicomwebRemote(remote)
            try:
                remote_client.store(seg)
            finally:
                remote_client.close()
