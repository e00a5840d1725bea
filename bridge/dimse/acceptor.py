"""The DICOM acceptor: a listening socket that accepts connections and runs each association in its own thread.

Associations are served by `association.Association`, our own protocol machine: the received bytes go from the
socket to the spool file without pynetdicom's reactor threads, event queues and 1 ms polling. Accepted
sockets get TCP_NODELAY (small responses would otherwise wait for Nagle's algorithm); several listener
processes can share one port (SO_REUSEPORT) so that receiving uses every core.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.presentation import PresentationContext, build_context

from bridge.dicom.sop_classes import Verification, storage_sop_classes
from bridge.dimse.association import Association, Limits, Services
from bridge.dimse.callers import CallerPolicy
from bridge.dimse.information_models import query_retrieve_sop_classes
from bridge.errors import ConfigError
from bridge.settings import DimseSettings, Settings
from storage.audit import record_event
from storage.db import Database

logger = logging.getLogger(__name__)

_ACCEPT_POLL_SECONDS = 0.2
_IDENTIFIER_SYNTAXES: list[str | UID] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def supported_contexts() -> list[PresentationContext]:
    """Verification; every storage SOP class in every transfer syntax (stored as received), in either role
    (a C-GET requestor takes the SCP role for the classes it retrieves); the Query/Retrieve FIND, MOVE and
    GET SOP classes of Patient Root and Study Root, whose identifiers are small (uncompressed little endian)."""
    contexts = [build_context(Verification)]
    for uid in storage_sop_classes():
        context = build_context(uid, ALL_TRANSFER_SYNTAXES)
        context.scu_role = context.scp_role = True  # accept the roles the requestor proposes
        contexts.append(context)
    contexts += [build_context(uid, _IDENTIFIER_SYNTAXES) for uid in query_retrieve_sop_classes()]
    return contexts


def retrieving_contexts() -> dict[str, PresentationContext]:
    """The storage contexts negotiated with a requestor that takes the SCP role (C-GET), by SOP class:
    Explicit VR Little Endian preferred (the acceptor's order decides when a context proposes several
    syntaxes), the syntax most stored files are in, so that they go back as stored and with their VRs."""
    preferred = [ExplicitVRLittleEndian, *(uid for uid in ALL_TRANSFER_SYNTAXES if uid != ExplicitVRLittleEndian)]
    contexts = {}
    for uid in storage_sop_classes():
        context = build_context(uid, preferred)
        context.scu_role = context.scp_role = True
        contexts[uid] = context
    return contexts


def tls_context(settings: DimseSettings) -> ssl.SSLContext | None:
    tls = settings.tls
    if not tls.enabled:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.ca_file:
        context.load_verify_locations(str(tls.ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class Acceptor:
    """A listening socket, its accept thread, and the associations it started."""

    def __init__(
        self, settings: Settings, services: Services, audit: Callable[[str, str], None], *, reuse_port: bool
    ) -> None:
        dimse = settings.dimse
        self.limits = Limits(settings=dimse, supported=supported_contexts(), retrieving=retrieving_contexts())
        self.policy = CallerPolicy(settings)
        self.services = services
        self.audit = audit
        self.tls = tls_context(dimse)
        self.associations: set[Association] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.socket = socket.socket(socket.AF_INET6 if ":" in dimse.host else socket.AF_INET)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self.socket.bind((dimse.host, dimse.port))
            self.socket.listen(128)
        except OSError as exc:
            self.socket.close()
            raise ConfigError(
                f"dimse.host/dimse.port {dimse.host}:{dimse.port}: cannot listen ({exc.strerror})"
            ) from None
        self.socket.settimeout(_ACCEPT_POLL_SECONDS)
        self.port = int(self.socket.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name="dicom-listener", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, address = self.socket.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                logger.exception("accepting a connection failed")
                time.sleep(_ACCEPT_POLL_SECONDS)
                continue
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                connection = self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
            association = Association(
                connection,
                str(address[0]),
                limits=self.limits,
                policy=self.policy,
                services=self.services,
                audit=self.audit,
                admit_another=lambda: self.active() <= self.limits.settings.max_associations,
            )
            with self._lock:
                self.associations.add(association)
            threading.Thread(target=self._run, args=(association,), name="dicom-association", daemon=True).start()

    def _run(self, association: Association) -> None:
        try:
            association.run()
        except Exception:
            logger.exception("association from %s failed", association.address)
        finally:
            with self._lock:
                self.associations.discard(association)

    def active(self) -> int:
        with self._lock:
            return len(self.associations)

    def stop(self, grace: float) -> None:
        """Refuse new associations (the listening socket closes); open ones get `grace` seconds to finish,
        then they are aborted (what they had not been answered for is not kept: the peer sends it again)."""
        self._closed.set()
        self._thread.join()
        self.socket.close()
        deadline = time.monotonic() + grace
        while self.active() and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._lock:
            remaining = list(self.associations)
        for association in remaining:
            logger.warning("aborting an association still open after dimse.dimse_timeout")
            association.abort()
        deadline = time.monotonic() + 10
        while self.active() and time.monotonic() < deadline:
            time.sleep(0.05)


def audit_with(database: Database, actor: str) -> Callable[[str, str], None]:
    """An audit callback writing one event per call in its own unit of work."""

    def audit(action: str, detail: str) -> None:
        with database.unit_of_work() as work:
            record_event(work.research, actor=actor, action=action, detail=detail[:1024])

    return audit
