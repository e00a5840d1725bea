"""One accepted connection, from A-ASSOCIATE-RQ to release or abort, in its own thread.

Each DIMSE request is handed to the service that serves it (`Services`: C-ECHO here, C-STORE by the store
service, C-FIND/C-MOVE/C-GET by the Query/Retrieve SCP). A C-STORE's dataset fragments go from the socket
straight into a spool file (no decode, bounded memory); when the last fragment is in, the store service
checks and admits the file and the C-STORE is answered. A Q/R request's identifier is gathered in memory
and its handler answers through this association (`Peer`), which for a C-GET also sends the C-STORE
sub-operations and reads their responses (`StoreChannel`); a C-CANCEL-RQ is looked for between responses
without waiting for one. Operations are served one at a time (no asynchronous operations window).
The association never waits for anything but its own peer (and a C-MOVE's destination), so a stalled peer
only holds its own thread until a timeout aborts it:

- `acse_timeout`: for the A-ASSOCIATE-RQ after the connection opens (and the TLS handshake);
- `network_timeout`: for the next message on an idle association;
- `dimse_timeout`: between the fragments of a message once it has started.
"""

from __future__ import annotations

import io
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext

from bridge.dicom import status
from bridge.dicom.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from bridge.dimse import messages, pdu
from bridge.dimse.callers import CallerPolicy
from bridge.dimse.get import GetSender
from bridge.dimse.identifier import encode_identifier
from bridge.dimse.information_models import MODELS
from bridge.dimse.qr_handlers import QueryRetrieveScp
from bridge.dimse.store import StoreService
from bridge.settings import DimseSettings
from storage.spool import IncomingFile

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_READ_BUFFER = 256 * 1024
_MAX_COMMAND = 64 * 1024  # a command set is a few hundred bytes
_MAX_IDENTIFIER = 1 << 20  # a C-FIND/C-MOVE/C-GET identifier is a few keys
_RESPONSE_BIT = 0x8000  # a response's command field is its request's with this bit set


class PeerGone(Exception):
    """The peer closed the connection (or it was shut down under us)."""


@dataclass(frozen=True)
class Limits:
    """What every association of a listener shares: timeouts, PDU size, the contexts it supports (and
    those it negotiates for storage SOP classes a requestor retrieves, by SOP class)."""

    settings: DimseSettings
    supported: list[PresentationContext]
    retrieving: dict[str, PresentationContext]


class _Reader:
    """Exact-length reads from the socket through a buffer (PDU and item headers are 6 bytes)."""

    def __init__(self, connection: socket.socket) -> None:
        self.stream = cast(io.BufferedReader, connection.makefile("rb", buffering=_READ_BUFFER))
        self.buffer = memoryview(bytearray(_CHUNK))

    def exactly(self, length: int) -> bytes:
        data = self.stream.read(length)
        if len(data) < length:
            raise PeerGone()
        return data

    def copy(self, length: int, sink: IncomingFile | None) -> None:
        """Move `length` bytes to `sink` (or drop them when None)."""
        while length:
            view = self.buffer[: min(length, _CHUNK)]
            got = self.stream.readinto(view)
            if not got:
                raise PeerGone()
            if sink is not None:
                sink.write(view[:got])
            length -= got


@dataclass(frozen=True)
class Services:
    """What the associations of a listener hand their requests to, one service per DIMSE service class:
    C-STORE, and the Query/Retrieve SCP (C-FIND, C-MOVE, C-GET; None: they are answered 0x0122)."""

    store: StoreService
    query_retrieve: QueryRetrieveScp | None = None


class Association:
    """The protocol machine of one connection (PS3.8 9.2, acceptor side)."""

    def __init__(
        self,
        connection: socket.socket,
        address: str,
        *,
        limits: Limits,
        policy: CallerPolicy,
        services: Services,
        audit: Callable[[str, str], None],
        admit_another: Callable[[], bool],
    ) -> None:
        self.connection = connection
        self.address = address
        self.limits = limits
        self.policy = policy
        self.services = services
        # the request that starts each DIMSE operation this acceptor serves, and its handler
        self.operations: dict[int, Callable[[int, messages.Command], None]] = {
            messages.C_ECHO_RQ: self._echo,
            messages.C_STORE_RQ: self._begin_store,
            messages.C_FIND_RQ: self._begin_query,
            messages.C_MOVE_RQ: self._begin_query,
            messages.C_GET_RQ: self._begin_query,
            messages.C_CANCEL_RQ: self._cancel,
        }
        self.audit = audit
        self.admit_another = admit_another
        self.project = ""
        self.calling = ""
        self.called = ""
        self.contexts: dict[int, tuple[str, str]] = {}
        self.peer_max_pdu = 0  # 0: no limit
        self.storage_scp_roles: set[str] = set()  # SOP classes the requestor stores as SCP (C-GET)
        self.identifier: bytearray | None = None  # of the Q/R request being received
        self.cancels: set[int] = set()  # message IDs the peer cancelled
        self.message_id = 0  # of our last C-STORE sub-operation request
        self.command = bytearray()
        self.request: messages.Command | None = None
        self.request_context = 0
        self.incoming: IncomingFile | None = None
        self.refusal: int | None = None  # a status decided before the dataset arrived: nothing is written
        self.aborted = False
        self.reader = _Reader(connection)  # reads nothing until asked (after the TLS handshake)

    def run(self) -> None:
        settings = self.limits.settings
        try:
            self.connection.settimeout(settings.acse_timeout)
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()
            if self._associate():
                self._serve()
        except TimeoutError:
            logger.warning("association from %s timed out: aborting it", self.address)
            self._send(pdu.abort(0))
        except pdu.ProtocolError as error:
            logger.warning("association from %s aborted: %s", self.address, error)
            self._send(pdu.abort(error.reason))
        except messages.MalformedCommand as error:
            logger.warning("association from %s aborted: %s", self.address, error)
            self._send(pdu.abort(pdu.ABORT_INVALID_PARAMETER))
        except (PeerGone, ConnectionError, ssl.SSLError) as error:
            if not self.aborted:
                logger.info("association from %s ended: %s", self.address, type(error).__name__)
        except OSError:  # our side: the spool's disk, say; the peer was not answered and sends it again
            if not self.aborted:
                logger.exception("association from %s failed", self.address)
        finally:
            if self.incoming is not None:
                self.incoming.discard()  # never answered: the peer sends it again
            self.reader.stream.close()  # else the socket stays open while its file object lives
            self.connection.close()

    def abort(self) -> None:
        """From another thread (stop): abort and wake the association's thread."""
        self.aborted = True
        self._send(pdu.abort(0))
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, data: bytes) -> None:
        try:
            self.connection.sendall(data)
        except OSError:
            pass

    def _associate(self) -> bool:
        """Read the A-ASSOCIATE-RQ; accept or reject it. True when accepted."""
        pdu_type, length = pdu.HEADER.unpack(self.reader.exactly(6))
        if pdu_type != pdu.ASSOCIATE_RQ or length > pdu.MAX_ASSOCIATE_RQ:
            raise pdu.ProtocolError(f"expected an A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02X}")
        request = pdu.decode_request(pdu.HEADER.pack(pdu_type, length) + self.reader.exactly(length))
        self.calling = request.calling_ae_title
        if not request.application_context_supported:
            return self._reject(
                pdu.REJECTED_PERMANENT,
                pdu.SOURCE_SERVICE_USER,
                pdu.APPLICATION_CONTEXT_NOT_SUPPORTED,
                "application context not supported",
            )
        decision = self.policy.decide(called=request.called_ae_title, calling=self.calling, address=self.address)
        if decision.project is None:
            assert decision.diagnostic is not None
            return self._reject(pdu.REJECTED_PERMANENT, pdu.SOURCE_SERVICE_USER, decision.diagnostic, decision.reason)
        if not self.admit_another():
            return self._reject(
                pdu.REJECTED_TRANSIENT,
                pdu.SOURCE_PROVIDER_PRESENTATION,
                pdu.LOCAL_LIMIT_EXCEEDED,
                "dimse.max_associations reached",
            )
        # our storage contexts accept any role proposed (acceptor.supported_contexts), so where the
        # requestor asks for the SCP role it has it, and we may send C-STOREs on those contexts (C-GET)
        self.storage_scp_roles = {
            str(item.sop_class_uid)
            for item in request.primitive.user_information
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.scp_role and item.sop_class_uid
        }
        settings = self.limits.settings
        negotiated = pdu.negotiate(
            request,
            self._supported(),
            max_pdu_size=settings.max_pdu_size,
            implementation_class_uid=str(IMPLEMENTATION_CLASS_UID),
            implementation_version=IMPLEMENTATION_VERSION,
        )
        self.project = decision.project
        self.called = request.called_ae_title
        self.contexts = negotiated.contexts
        self.peer_max_pdu = int(request.primitive.maximum_length_received or 0)
        self.connection.sendall(negotiated.accept)
        logger.debug("accepted association from %s (%s) for project %s", self.address, self.calling, self.project)
        return True

    def _supported(self) -> list[PresentationContext]:
        """The contexts to negotiate: for the storage SOP classes the requestor retrieves (SCP role) the
        ones preferring the syntax most files are stored in, so that they go back as stored."""
        if not self.storage_scp_roles:
            return self.limits.supported
        retrieving = self.limits.retrieving
        roles = self.storage_scp_roles
        return [
            retrieving.get(uid, context) if (uid := str(context.abstract_syntax)) in roles else context
            for context in self.limits.supported
        ]

    def _reject(self, result: int, source: int, reason: int, why: str) -> bool:
        logger.warning("rejected association from %s: %s", self.address, why)
        self.audit("association.rejected", f"{why} (from {self.address})")
        self._send(pdu.reject(result, source, reason))
        return False

    def _serve(self) -> None:
        """P-DATA until A-RELEASE-RQ (answered) or A-ABORT."""
        settings = self.limits.settings
        while True:
            in_message = bool(self.command) or self.request is not None
            self.connection.settimeout(settings.dimse_timeout if in_message else settings.network_timeout)
            pdu_type, length = pdu.HEADER.unpack(self.reader.exactly(6))
            if pdu_type == pdu.P_DATA_TF:
                self._p_data(length)
            elif pdu_type == pdu.RELEASE_RQ:
                self.reader.exactly(length)
                self._send(pdu.release_reply())
                return
            elif pdu_type == pdu.ABORT:
                self.reader.exactly(length)
                logger.info("association from %s aborted by the peer", self.address)
                return
            else:
                raise pdu.ProtocolError(f"unexpected PDU type 0x{pdu_type:02X} on an established association")

    def _p_data(self, length: int) -> None:
        remaining = length
        while remaining:
            if remaining < pdu.PDV_HEADER.size:
                raise pdu.ProtocolError("P-DATA-TF shorter than its items", pdu.ABORT_INVALID_PARAMETER)
            item_length, context_id, control = pdu.PDV_HEADER.unpack(self.reader.exactly(pdu.PDV_HEADER.size))
            fragment = item_length - 2
            remaining -= 4 + item_length
            if fragment < 0 or remaining < 0:
                raise pdu.ProtocolError("PDV item longer than its P-DATA-TF", pdu.ABORT_INVALID_PARAMETER)
            if context_id not in self.contexts:
                raise pdu.ProtocolError(
                    f"presentation context {context_id} was not accepted", pdu.ABORT_INVALID_PARAMETER
                )
            if control & pdu.COMMAND:
                self._command_fragment(context_id, fragment, last=bool(control & pdu.LAST_FRAGMENT))
            else:
                self._dataset_fragment(context_id, fragment, last=bool(control & pdu.LAST_FRAGMENT))

    def _command_fragment(self, context_id: int, length: int, *, last: bool) -> None:
        if self.request is not None or len(self.command) + length > _MAX_COMMAND:
            raise pdu.ProtocolError("unexpected command fragment", pdu.ABORT_INVALID_PARAMETER)
        self.command += self.reader.exactly(length)
        if not last:
            return
        request = messages.decode_command(bytes(self.command))
        self.command.clear()
        operation = self.operations.get(request.command_field)
        if operation is None:
            raise pdu.ProtocolError(f"unsupported DIMSE command 0x{request.command_field:04X}")
        operation(context_id, request)

    def _echo(self, context_id: int, request: messages.Command) -> None:
        self.respond(context_id, request, messages.C_ECHO_RSP, status.SUCCESS)

    def _begin_store(self, context_id: int, request: messages.Command) -> None:
        """A C-STORE-RQ: its dataset goes to a spool file as it arrives, unless it is refused already."""
        if not request.has_dataset:
            raise pdu.ProtocolError("C-STORE-RQ without a dataset")
        self.request, self.request_context = request, context_id
        abstract_syntax, transfer_syntax = self.contexts[context_id]
        if request.sop_class_uid != abstract_syntax:
            self.refusal = status.SOP_CLASS_NOT_SUPPORTED  # not what the context was accepted for
            return
        store = self.services.store
        if not store.has_space():
            self.refusal = status.OUT_OF_RESOURCES  # nothing of it is written
            return
        self.incoming = store.receive(
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
            transfer_syntax_uid=transfer_syntax,
            calling_ae=self.calling,
        )

    def _begin_query(self, context_id: int, request: messages.Command) -> None:
        """A C-FIND/C-MOVE/C-GET-RQ: its identifier is gathered, then the Q/R SCP answers it."""
        if not request.has_dataset:
            raise pdu.ProtocolError("query/retrieve request without an identifier")
        self.request, self.request_context = request, context_id
        self.identifier = bytearray()

    def _identifier_fragment(self, context_id: int, length: int, *, last: bool) -> None:
        request, identifier = self.request, self.identifier
        assert request is not None and identifier is not None
        if context_id != self.request_context or len(identifier) + length > _MAX_IDENTIFIER:
            raise pdu.ProtocolError("identifier fragment out of place or too long", pdu.ABORT_INVALID_PARAMETER)
        identifier += self.reader.exactly(length)
        if not last:
            return
        self.request, self.identifier = None, None
        response = request.command_field | _RESPONSE_BIT
        scp = self.services.query_retrieve
        abstract_syntax, _ = self.contexts[context_id]
        if scp is None or request.sop_class_uid != abstract_syntax or abstract_syntax not in MODELS:
            self.respond(context_id, request, response, status.SOP_CLASS_NOT_SUPPORTED)
            return
        scp.handle(self, context_id, request, bytes(identifier), lambda: GetSender(self, scp.service))
        self.cancels.discard(request.message_id)

    def _cancel(self, context_id: int, request: messages.Command) -> None:
        """A C-CANCEL-RQ for an operation already answered: nothing to do (PS3.7 9.3.2.3)."""

    def _dataset_fragment(self, context_id: int, length: int, *, last: bool) -> None:
        if self.identifier is not None:
            self._identifier_fragment(context_id, length, last=last)
            return
        request = self.request
        if request is None or context_id != self.request_context:
            raise pdu.ProtocolError("dataset fragment without its C-STORE-RQ", pdu.ABORT_INVALID_PARAMETER)
        incoming = self.incoming
        self.reader.copy(length, incoming)
        if not last:
            return
        if incoming is None:
            answer = self.refusal if self.refusal is not None else status.PROCESSING_FAILURE
        else:
            answer = self.services.store.store(
                incoming,
                project=self.project,
                calling_ae=self.calling,
                sop_class_uid=request.sop_class_uid,
                sop_instance_uid=request.sop_instance_uid,
            )
        self.request, self.incoming, self.refusal = None, None, None
        self.respond(context_id, request, messages.C_STORE_RSP, answer)

    # --- Peer: what the Q/R handlers answer through
    def transfer_syntax(self, context_id: int) -> tuple[bool, bool]:
        syntax = UID(self.contexts[context_id][1])
        return bool(syntax.is_implicit_VR), bool(syntax.is_little_endian)

    def respond(
        self,
        context_id: int,
        request: messages.Command,
        field: int,
        answer: int,
        *,
        identifier: Dataset | None = None,
        counts: messages.SubOperationCounts | None = None,
        error_comment: str = "",
    ) -> None:
        data = None if identifier is None else encode_identifier(identifier, self.transfer_syntax(context_id))
        command = messages.encode_response(
            request, field, answer, has_dataset=data is not None, counts=counts, error_comment=error_comment
        )
        self.connection.sendall(pdu.command_pdu(context_id, command))
        if data is not None:
            self._send_dataset(context_id, io.BytesIO(data), len(data))

    def cancelled(self, message_id: int) -> bool:
        if message_id in self.cancels:
            return True
        while self._input_waiting():
            command = self._read_command()
            if command.command_field != messages.C_CANCEL_RQ:
                raise pdu.ProtocolError(f"DIMSE command 0x{command.command_field:04X} while an operation runs")
            self.cancels.add(command.message_id_responded)
        return message_id in self.cancels

    # --- StoreChannel: the C-STORE sub-operations of a C-GET
    def storage_contexts(self, sop_class_uid: str) -> dict[str, int]:
        if sop_class_uid not in self.storage_scp_roles:
            return {}
        return {syntax: cid for cid, (abstract, syntax) in self.contexts.items() if abstract == sop_class_uid}

    def next_message_id(self) -> int:
        self.message_id = self.message_id % 0xFFFF + 1
        return self.message_id

    def send_message(self, context_id: int, command: bytes, dataset: BinaryIO, length: int) -> None:
        self.connection.sendall(pdu.command_pdu(context_id, command))
        self._send_dataset(context_id, dataset, length)

    def store_response(self, message_id: int) -> int:
        while True:
            command = self._read_command()
            if command.command_field == messages.C_CANCEL_RQ:
                self.cancels.add(command.message_id_responded)
            elif command.command_field == messages.C_STORE_RSP and command.message_id_responded == message_id:
                return status.PROCESSING_FAILURE if command.status is None else command.status
            else:
                raise pdu.ProtocolError(f"DIMSE command 0x{command.command_field:04X} while a C-GET runs")

    # --- framing of what the Q/R SCP sends and reads
    def _send_dataset(self, context_id: int, dataset: BinaryIO, length: int) -> None:
        """`length` bytes of `dataset` as P-DATA-TF PDUs no longer than the peer takes."""
        fragment = min(self.peer_max_pdu - pdu.PDV_HEADER.size, _CHUNK) if self.peer_max_pdu else _CHUNK
        remaining = length
        while True:
            chunk = dataset.read(min(fragment, remaining))
            if len(chunk) < min(fragment, remaining):
                raise OSError("a stored file is shorter than it was a moment ago")
            remaining -= len(chunk)
            control = pdu.LAST_FRAGMENT if not remaining else 0
            header = pdu.HEADER.pack(pdu.P_DATA_TF, pdu.PDV_HEADER.size + len(chunk))
            self.connection.sendall(header + pdu.PDV_HEADER.pack(len(chunk) + 2, context_id, control) + chunk)
            if not remaining:
                return

    def _input_waiting(self) -> bool:
        """Whether the peer has sent something not read yet (without waiting for it)."""
        timeout = self.connection.gettimeout()
        try:
            self.connection.settimeout(0)
            return bool(self.reader.stream.peek(1))
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        finally:
            self.connection.settimeout(timeout)

    def _read_command(self) -> messages.Command:
        """The next message from the peer, which must be a command without a dataset (a C-STORE-RSP, a
        C-CANCEL-RQ) while an operation runs."""
        self.connection.settimeout(self.limits.settings.dimse_timeout)
        command = bytearray()
        while True:
            pdu_type, length = pdu.HEADER.unpack(self.reader.exactly(6))
            if pdu_type == pdu.ABORT:
                self.reader.exactly(length)
                raise PeerGone()
            if pdu_type != pdu.P_DATA_TF:
                raise pdu.ProtocolError(f"unexpected PDU type 0x{pdu_type:02X} while an operation runs")
            remaining = length
            while remaining:
                item_length, context_id, control = pdu.PDV_HEADER.unpack(self.reader.exactly(pdu.PDV_HEADER.size))
                remaining -= 4 + item_length
                if item_length < 2 or remaining < 0 or context_id not in self.contexts:
                    raise pdu.ProtocolError("malformed PDV item", pdu.ABORT_INVALID_PARAMETER)
                if not control & pdu.COMMAND or len(command) + item_length > _MAX_COMMAND:
                    raise pdu.ProtocolError("a dataset where a command was expected", pdu.ABORT_INVALID_PARAMETER)
                command += self.reader.exactly(item_length - 2)
                if control & pdu.LAST_FRAGMENT:
                    if remaining:
                        raise pdu.ProtocolError("more PDV items after a command", pdu.ABORT_INVALID_PARAMETER)
                    return messages.decode_command(bytes(command))
