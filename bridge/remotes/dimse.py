"""DIMSE remote: C-FIND to search, C-MOVE (to the bridge's own listener) or C-GET to retrieve.

One association per operation (a search, the instance list of a study, the retrieval of a series), so
parallel retrievals do not share one. Statuses are translated here: a remote out of resources, a refused
connection, a lost association or no answer within the timeout may pass and are retried (`with_retries`);
anything else is reported with the status and the remote's Error Comment. A result cap shows in C-FIND as
a final Cancel (Orthanc) and becomes `TruncatedSearch`.

C-MOVE sends the instances to `move_destination` (the project's AE title by default), which the remote must
know as the bridge's host and port: they arrive at `serve`'s listener like any C-STORE. C-GET brings them
back on the same association (the bridge takes the storage SCP role), each written to a file as it arrives.
"""

from __future__ import annotations

import logging
import shutil
import ssl
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pydicom import uid as uids
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, build_role, evt

from bridge.dicom import status as codes
from bridge.dicom.sop_classes import (
    LabelMapSegmentationStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from bridge.errors import RemoteError, RetriableError, TruncatedSearch, redact, with_retries
from bridge.remotes.base import Delivery, RemoteInstance, RemoteSeries
from bridge.remotes.scu import c_store, responses
from bridge.settings import RemoteSettings

logger = logging.getLogger(__name__)
T = TypeVar("T")
FIND = StudyRootQueryRetrieveInformationModelFind
MOVE = StudyRootQueryRetrieveInformationModelMove
GET = StudyRootQueryRetrieveInformationModelGet
_MAX_STORAGE_CONTEXTS = 120  # 128 presentation contexts per association, some left for the C-GET model
#: When the instance search did not name the SOP classes, C-GET offers these.
COMMON_STORAGE = (
    uids.CTImageStorage,
    uids.EnhancedCTImageStorage,
    uids.MRImageStorage,
    uids.EnhancedMRImageStorage,
    uids.PositronEmissionTomographyImageStorage,
    uids.EnhancedPETImageStorage,
    uids.SegmentationStorage,
    LabelMapSegmentationStorage,
    uids.BasicTextSRStorage,
    uids.EnhancedSRStorage,
    uids.ComprehensiveSRStorage,
    uids.RTStructureSetStorage,
    uids.RTDoseStorage,
    uids.RTPlanStorage,
    uids.ComputedRadiographyImageStorage,
    uids.DigitalXRayImageStorageForPresentation,
    uids.NuclearMedicineImageStorage,
    uids.UltrasoundImageStorage,
    uids.SecondaryCaptureImageStorage,
)
_PENDING = (codes.PENDING, codes.PENDING_WITH_WARNINGS)
_RETRIABLE_STATUSES = {  # out of resources (of either kind)
    codes.OUT_OF_RESOURCES,
    codes.OUT_OF_RESOURCES_MATCHES,
    codes.OUT_OF_RESOURCES_SUB_OPERATIONS,
}
_EXPLAINED = {
    codes.MOVE_DESTINATION_UNKNOWN: (
        "the remote does not know the move destination: add the bridge's AE title, host and port to it"
    ),
    codes.DATASET_DOES_NOT_MATCH_SOP_CLASS: "the remote says the identifier does not match the SOP class",
    codes.CANNOT_UNDERSTAND: "the remote is unable to process the request",
}


class DimseRemote:
    def __init__(self, settings: RemoteSettings, *, calling_ae: str, move_destination: str | None = None) -> None:
        if settings.ae_title is None or settings.host is None or settings.port is None:
            raise RemoteError(f"remote {settings.name}: no ae_title, host and port configured")
        self.remote_ae, self.host, self.port = settings.ae_title, settings.host, settings.port
        self.settings = settings
        self.name = settings.name
        self.parallel = settings.parallel
        self.timeout = settings.timeout
        self.calling_ae = calling_ae
        self.move_destination = move_destination
        self.via_listener = settings.retrieval == "c-move"
        self.address = f"{settings.ae_title}@{settings.host}:{settings.port}"
        self._tls = _client_tls(settings)

    # -- associations and statuses --------------------------------------------------------------------
    def _associate(self, ae: AE, *, handlers: list[Any] | None = None, roles: list[Any] | None = None) -> Any:
        settings = self.settings
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.timeout
        ae.connection_timeout = settings.timeout
        ae.maximum_pdu_size = 4 * 1024 * 1024
        assoc = ae.associate(
            self.host,
            self.port,
            ae_title=self.remote_ae,
            ext_neg=roles,
            evt_handlers=handlers,
            tls_args=(self._tls, self.host) if self._tls else None,
        )
        if assoc.is_established:
            return assoc
        if assoc.is_rejected:
            raise RemoteError(f"remote {self.name}: {self.address} rejected the association (is {ae.ae_title} known?)")
        raise RetriableError(f"remote {self.name}: no association with {self.address} (refused, timed out or aborted)")

    def _call(self, action: Callable[[], T]) -> T:
        return with_retries(self.settings.retries, action)

    def _failure(self, what: str, status: Dataset) -> RemoteError:
        if "Status" not in status:
            return RetriableError(f"remote {self.name}: {what}: no answer (association lost or timed out)")
        code = int(status.Status)
        comment = redact(str(status.get("ErrorComment", "")).strip())
        text = f"remote {self.name}: {what} answered status 0x{code:04X}"
        if code in _EXPLAINED:
            text += f" ({_EXPLAINED[code]})"
        if comment:
            text += f": {comment}"
        return RetriableError(text) if code in _RETRIABLE_STATUSES else RemoteError(text)

    def _find(self, query: Dataset, what: str) -> list[Dataset]:
        """One C-FIND: its identifiers; `TruncatedSearch` when the remote cancelled (its result cap)."""

        def run() -> list[Dataset]:
            ae = AE(ae_title=self.calling_ae)
            ae.add_requested_context(FIND)
            assoc = self._associate(ae)
            found: list[Dataset] = []
            try:
                for status, identifier in responses(assoc.send_c_find(query, FIND), assoc):
                    code = int(status.Status) if "Status" in status else None
                    if code in _PENDING:
                        if identifier is not None:
                            found.append(identifier)
                    elif code == codes.SUCCESS:
                        return found
                    elif code == codes.CANCEL:
                        raise TruncatedSearch(f"remote {self.name}: {what} cut short after {len(found)} results")
                    else:
                        raise self._failure(what, status)
                raise self._failure(what, Dataset())
            finally:
                if assoc.is_established:
                    assoc.release()

        return self._call(run)

    # -- searches ---------------------------------------------------------------------------------------
    def search_studies(self, filters: dict[str, str]) -> list[str]:
        query = _identifier("STUDY", {"StudyInstanceUID": "", **filters})
        found = self._find(query, "study search")
        limit = self.settings.result_limit
        if limit is not None and len(found) >= limit:
            raise TruncatedSearch(f"remote {self.name}: study search reached result_limit ({limit})")
        return [str(ds.StudyInstanceUID) for ds in found if ds.get("StudyInstanceUID")]

    def search_series(self, study_uid: str) -> list[RemoteSeries]:
        query = _identifier(
            "SERIES", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": "", "NumberOfSeriesRelatedInstances": ""}
        )
        listed = []
        for item in self._find(query, "series search"):
            uid = str(item.get("SeriesInstanceUID", ""))
            count = item.get("NumberOfSeriesRelatedInstances")
            if uid:
                listed.append(RemoteSeries(uid, int(count) if count not in (None, "") else None))
        return listed

    def search_instances(self, study_uid: str, series_uid: str | None = None) -> list[RemoteInstance]:
        """The instances of a series (C-FIND IMAGE), or of every series of the study."""
        series = [series_uid] if series_uid else [s.uid for s in self.search_series(study_uid)]
        instances = []
        for uid in series:
            keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": uid, "SOPInstanceUID": "", "SOPClassUID": ""}
            for image in self._find(_identifier("IMAGE", keys), "instance search"):
                sop = str(image.get("SOPInstanceUID", ""))
                if sop:
                    instances.append(RemoteInstance(study_uid, uid, sop, str(image.get("SOPClassUID", "")) or None))
        return instances

    def probe(self) -> str:
        """A C-ECHO: proves address, AE titles (and TLS) are right."""

        def run() -> str:
            ae = AE(ae_title=self.calling_ae)
            ae.add_requested_context(Verification)
            assoc = self._associate(ae)
            try:
                status = assoc.send_c_echo()
            finally:
                assoc.release()
            if int(status.get("Status", -1)) != 0:
                raise self._failure("C-ECHO", status)
            return "C-ECHO answered success"

        return self._call(run)

    # -- retrieval --------------------------------------------------------------------------------------
    def retrieve(
        self,
        delivery: Delivery,
        study_uid: str,
        series_uid: str,
        sop_uid: str | None = None,
        sop_classes: frozenset[str] = frozenset(),
    ) -> int:
        """C-MOVE or C-GET a series (or one instance): how many sub-operations completed."""
        level = "IMAGE" if sop_uid else "SERIES"
        keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
        if sop_uid:
            keys["SOPInstanceUID"] = sop_uid
        query = _identifier(level, keys)
        if self.via_listener:
            return self._call(lambda: self._move(query))
        return self._call(lambda: self._get(query, delivery, sop_classes))

    def _move(self, query: Dataset) -> int:
        if not self.move_destination:
            raise RemoteError(f"remote {self.name}: no move destination (set move_destination)")
        ae = AE(ae_title=self.calling_ae)
        ae.add_requested_context(MOVE)
        assoc = self._associate(ae)
        try:
            return self._sub_operations(
                "C-MOVE", responses(assoc.send_c_move(query, self.move_destination, MOVE), assoc)
            )
        finally:
            if assoc.is_established:
                assoc.release()

    def _get(self, query: Dataset, delivery: Delivery, classes: frozenset[str]) -> int:
        ae = AE(ae_title=self.calling_ae)
        ae.add_requested_context(GET)
        offered = sorted(classes or COMMON_STORAGE)[:_MAX_STORAGE_CONTEXTS]
        for uid in offered:
            ae.add_requested_context(uid, ALL_TRANSFER_SYNTAXES)
        roles = [build_role(uid, scp_role=True) for uid in offered]

        def on_store(event: evt.Event) -> int:
            _, target = delivery.new_file()
            shutil.move(event.dataset_path, target)  # pynetdicom wrote it to a temporary file as it arrived
            delivery.deliver(target)
            return codes.SUCCESS

        # pynetdicom's documented configuration module (named `_config`): received datasets go to a file
        _config.STORE_RECV_CHUNKED_DATASET = True
        assoc = self._associate(ae, handlers=[(evt.EVT_C_STORE, on_store)], roles=roles)
        try:
            return self._sub_operations("C-GET", responses(assoc.send_c_get(query, GET), assoc))
        finally:
            if assoc.is_established:
                assoc.release()

    def _sub_operations(self, what: str, answers: Iterator[tuple[Dataset, Any]]) -> int:
        """Follow the pending answers to the final one: completed sub-operations, or the failure."""
        final = Dataset()
        for status, _ in answers:
            if "Status" not in status:
                break
            final = status
            if int(status.Status) not in _PENDING:
                break
        if "Status" not in final or int(final.Status) in _PENDING:
            raise self._failure(what, Dataset())
        code = int(final.Status)
        completed = int(final.get("NumberOfCompletedSuboperations", 0) or 0)
        failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
        if code == codes.SUCCESS or (code == codes.SUB_OPERATIONS_COMPLETE_WITH_FAILURES and completed):
            if failed or code == codes.SUB_OPERATIONS_COMPLETE_WITH_FAILURES:
                logger.warning(
                    "remote %s: %s: %d sub-operations failed, %d completed", self.name, what, failed, completed
                )
            return completed
        raise self._failure(what, final)

    # -- sending ------------------------------------------------------------------------------------------
    def store(self, dataset: Dataset) -> None:
        """One C-STORE on its own association, once (the outbox retries); returns only on a success status
        (0x0000, or a warning: the instance is stored)."""
        ae = AE(ae_title=self.calling_ae)
        ae.add_requested_context(str(dataset.SOPClassUID), [str(dataset.file_meta.TransferSyntaxUID)])
        assoc = self._associate(ae)
        what = f"C-STORE of a {dataset.get('Modality', '')} instance"
        try:
            answer = c_store(assoc, dataset)
        finally:
            if assoc.is_established:
                assoc.release()
        if "Status" not in answer:
            raise self._failure(what, answer)
        code = int(answer.Status)
        if code != codes.SUCCESS and not 0xB000 <= code <= 0xBFFF:
            raise self._failure(what, answer)

    def close(self) -> None:
        """Nothing held between operations."""


def _identifier(level: str, keys: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _client_tls(settings: RemoteSettings) -> ssl.SSLContext | None:
    if not settings.tls:
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None
    )
    if settings.tls_cert_file and settings.tls_key_file:
        context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    return context
