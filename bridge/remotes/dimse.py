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

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, build_role, evt

from bridge.dimse.scu import responses
from bridge.remotes.base import (
    Delivery,
    RemoteError,
    RemoteInstance,
    RemoteSeries,
    RetriableError,
    TruncatedSearch,
    redact,
    with_retries,
)
from bridge.settings import RemoteSettings

logger = logging.getLogger(__name__)
T = TypeVar("T")

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
VERIFICATION = "1.2.840.10008.1.1"
_PENDING = (0xFF00, 0xFF01)
_CANCEL = 0xFE00
_MAX_STORAGE_CONTEXTS = 120  # 128 presentation contexts per association, some left for the C-GET model
#: When the instance search did not name the SOP classes, C-GET offers these.
COMMON_STORAGE = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
)
_RETRIABLE_STATUSES = {0xA700, 0xA701, 0xA702}  # out of resources (of either kind)
_EXPLAINED = {
    0xA801: "the remote does not know the move destination: add the bridge's AE title, host and port to it",
    0xA900: "the remote says the identifier does not match the SOP class",
    0xC000: "the remote is unable to process the request",
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
                    elif code == 0x0000:
                        return found
                    elif code == _CANCEL:
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
            ae.add_requested_context(VERIFICATION)
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
            return 0x0000

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
        if code == 0x0000 or (code == 0xB000 and completed):
            if failed or code == 0xB000:
                logger.warning(
                    "remote %s: %s: %d sub-operations failed, %d completed", self.name, what, failed, completed
                )
            return completed
        raise self._failure(what, final)

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
