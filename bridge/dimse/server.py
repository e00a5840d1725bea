"""The DICOM listener: an application entity accepting C-ECHO and C-STORE for every storage SOP class.

Handlers are thin: event -> one call -> status. Sockets get TCP_NODELAY (small responses would otherwise
wait for Nagle's algorithm) and a large maximum PDU, so that a 0.5 MB instance arrives in a few reads.
"""

from __future__ import annotations

import logging
import socket
import ssl
import tempfile
import threading
from typing import Any

from pydicom._uid_dict import UID_dictionary
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt, sop_class
from pynetdicom.transport import ThreadedAssociationServer

from bridge.dimse import acceptance, status
from bridge.dimse.receiver import StoreReceiver
from bridge.settings import ConfigError, DimseSettings, Settings
from storage.audit import record_event

logger = logging.getLogger(__name__)

LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"  # newer than pydicom 3.0's dictionary
VERIFICATION = "1.2.840.10008.1.1"
_NOT_INSTANCES = {"1.2.840.10008.1.3.10"}  # Media Storage Directory Storage (DICOMDIR)


def storage_sop_classes() -> list[str]:
    """Every storage SOP class pydicom or pynetdicom knows, plus Label Map Segmentation."""
    known = {uid for uid, entry in UID_dictionary.items() if entry[1] == "SOP Class" and entry[0].endswith("Storage")}
    known |= set(sop_class._STORAGE_CLASSES.values())
    known |= {LABEL_MAP_SEGMENTATION_STORAGE}
    return sorted(known - _NOT_INSTANCES)


class _HandshakeInAssociationThread(ssl.SSLContext):
    """pynetdicom wraps accepted sockets in its accept loop; a handshake there, without a timeout, lets one
    silent caller block every other association (and the stop). Defer it to the association's own thread,
    under the network timeout."""

    network_timeout: float = 60.0

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock.settimeout(self.network_timeout)
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)


def tls_context(settings: DimseSettings) -> ssl.SSLContext | None:
    tls = settings.tls
    if not tls.enabled:
        return None
    context = _HandshakeInAssociationThread(ssl.PROTOCOL_TLS_SERVER)
    context.network_timeout = settings.network_timeout
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.ca_file:
        context.load_verify_locations(str(tls.ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def build_ae(settings: DimseSettings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.add_supported_context(VERIFICATION)
    for uid in storage_sop_classes():
        ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
    return ae


class _SharedPortServer(ThreadedAssociationServer):
    """Binds with SO_REUSEPORT: several listener processes accept on one port, the kernel spreads the
    connections over them."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def start_listener(
    settings: Settings, receiver: StoreReceiver, audit: Any, *, reuse_port: bool = False
) -> ThreadedAssociationServer:
    """Start accepting associations (non-blocking). `audit(action, detail)` records rejected attempts."""
    _config.STORE_RECV_CHUNKED_DATASET = True  # write received datasets to a file, not to memory
    tempfile.tempdir = str(receiver.spool.incoming)  # ... in the spool, so that admission is a rename
    policy = acceptance.AcceptancePolicy(settings)

    def rejected(assoc: Any, decision: acceptance.Decision) -> None:
        logger.warning("rejected association from %s: %s", assoc.requestor.address, decision.reason)
        audit("association.rejected", f"{decision.reason} (from {assoc.requestor.address})")

    def on_open(event: evt.Event) -> None:
        connection: Any = event.assoc.dul.socket
        connection.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        acceptance.install(event.assoc, policy, receiver.route, rejected)

    def on_echo(_event: evt.Event) -> int:
        return status.SUCCESS

    def on_store(event: evt.Event) -> int:
        request: Any = event.request
        return receiver.store(
            assoc=event.assoc,
            path=event.dataset_path,
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
        )

    ae = build_ae(settings.dimse)
    handlers: Any = [(evt.EVT_CONN_OPEN, on_open), (evt.EVT_C_ECHO, on_echo), (evt.EVT_C_STORE, on_store)]
    try:
        server = ae.make_server(
            (settings.dimse.host, settings.dimse.port),
            evt_handlers=handlers,
            ssl_context=tls_context(settings.dimse),
            server_class=_SharedPortServer if reuse_port else ThreadedAssociationServer,
        )
    except OSError as exc:
        raise ConfigError(
            f"dimse.host/dimse.port {settings.dimse.host}:{settings.dimse.port}: cannot listen ({exc.strerror})"
        ) from None
    threading.Thread(target=server.serve_forever, name="dicom-listener", daemon=True).start()
    ae._servers.append(server)  # as AE.start_server does: server.shutdown() removes it again
    return server


def audit_with(ingest_database: Any, actor: str) -> Any:
    """An audit callback writing one event per call in its own unit of work."""

    def audit(action: str, detail: str) -> None:
        with ingest_database.unit_of_work() as work:
            record_event(work.research, actor=actor, action=action, detail=detail[:1024])

    return audit
