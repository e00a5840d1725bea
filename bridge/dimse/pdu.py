"""Upper-layer PDUs (PS3.8 section 9.3): the framing the receiver reads and the few PDUs it sends.

Association set-up happens once per association, so A-ASSOCIATE-RQ/AC go through pynetdicom's tested
encoders and its presentation context negotiation. Everything after that (P-DATA, release, abort) is framed
here with `struct`, so that a received dataset fragment goes from the socket to the spool file without being
copied into PDU objects first.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

ASSOCIATE_RQ = 0x01
ASSOCIATE_AC = 0x02
ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
RELEASE_RQ = 0x05
RELEASE_RP = 0x06
ABORT = 0x07

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
HEADER = struct.Struct(">BxL")  # PDU type, reserved, length
PDV_HEADER = struct.Struct(">LBB")  # item length, presentation context ID, message control header
MAX_ASSOCIATE_RQ = 1 << 20  # an A-ASSOCIATE-RQ bigger than this is not a DICOM peer

# Message control header bits (PS3.8 E.2)
COMMAND = 0x01
LAST_FRAGMENT = 0x02

# A-ASSOCIATE-RJ fields (PS3.8 9.3.4)
REJECTED_PERMANENT = 0x01
REJECTED_TRANSIENT = 0x02
SOURCE_SERVICE_USER = 0x01
SOURCE_PROVIDER_PRESENTATION = 0x03
APPLICATION_CONTEXT_NOT_SUPPORTED = 0x02
CALLING_AE_NOT_RECOGNIZED = 0x03
CALLED_AE_NOT_RECOGNIZED = 0x07
LOCAL_LIMIT_EXCEEDED = 0x02

# A-ABORT fields (PS3.8 9.3.8)
ABORT_SOURCE_PROVIDER = 0x02
ABORT_UNEXPECTED_PDU = 0x02
ABORT_INVALID_PARAMETER = 0x06


class ProtocolError(Exception):
    """The peer broke the protocol; the association is aborted with `reason` (A-ABORT reason)."""

    def __init__(self, message: str, reason: int = ABORT_UNEXPECTED_PDU) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AssociationRequest:
    """What the receiver needs of an A-ASSOCIATE-RQ."""

    primitive: A_ASSOCIATE
    calling_ae_title: str
    called_ae_title: str

    @property
    def application_context_supported(self) -> bool:
        return str(self.primitive.application_context_name) == APPLICATION_CONTEXT_NAME


@dataclass(frozen=True)
class Negotiated:
    """The A-ASSOCIATE-AC to send, and the accepted contexts: ID -> (abstract syntax, transfer syntax)."""

    accept: bytes
    contexts: dict[int, tuple[str, str]]


def decode_request(pdu: bytes) -> AssociationRequest:
    """Decode a whole A-ASSOCIATE-RQ PDU (header included)."""
    request = A_ASSOCIATE_RQ()
    try:
        request.decode(pdu)
        primitive = request.to_primitive()
    except Exception as error:  # pynetdicom raises several types for malformed items
        raise ProtocolError(f"malformed A-ASSOCIATE-RQ ({type(error).__name__})", ABORT_INVALID_PARAMETER) from None
    return AssociationRequest(
        primitive=primitive,
        calling_ae_title=str(primitive.calling_ae_title).strip(),
        called_ae_title=str(primitive.called_ae_title).strip(),
    )


def negotiate(
    request: AssociationRequest,
    supported: list[PresentationContext],
    *,
    max_pdu_size: int,
    implementation_class_uid: str,
    implementation_version: str,
) -> Negotiated:
    """Accept what we support of the proposed presentation contexts (rejecting the rest, per context)."""
    primitive = request.primitive
    roles = {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in primitive.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid is not None
    }
    results, role_replies = negotiate_as_acceptor(
        primitive.presentation_context_definition_list, supported, roles or None
    )
    accept = A_ASSOCIATE()
    accept.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    accept.calling_ae_title = primitive.calling_ae_title
    accept.called_ae_title = primitive.called_ae_title
    accept.result = 0x00
    accept.result_source = 0x01
    accept.presentation_context_definition_results_list = results
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = max_pdu_size
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = UID(implementation_class_uid)
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = implementation_version
    accept.user_information = [maximum, implementation, version, *role_replies]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(accept)
    contexts = {
        int(context.context_id): (str(context.abstract_syntax), str(context.transfer_syntax[0]))
        for context in results
        if context.result == 0x00 and context.context_id is not None and context.abstract_syntax is not None
    }
    return Negotiated(accept=pdu.encode(), contexts=contexts)


def reject(result: int, source: int, reason: int) -> bytes:
    return HEADER.pack(ASSOCIATE_RJ, 4) + bytes((0, result, source, reason))


def release_reply() -> bytes:
    return HEADER.pack(RELEASE_RP, 4) + b"\x00" * 4


def abort(reason: int, source: int = ABORT_SOURCE_PROVIDER) -> bytes:
    return HEADER.pack(ABORT, 4) + bytes((0, 0, source, reason))


def command_pdu(context_id: int, command: bytes) -> bytes:
    """One P-DATA-TF carrying a whole (small) command set as its last fragment."""
    item = PDV_HEADER.pack(len(command) + 2, context_id, COMMAND | LAST_FRAGMENT)
    return HEADER.pack(P_DATA_TF, len(item) + len(command)) + item + command
