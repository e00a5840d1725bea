"""C-MOVE sub-operations: a pynetdicom association from the bridge to the move destination, one C-STORE per
instance, each naming the C-MOVE it serves (Move Originator AE title and Message ID).

The association proposes each SOP class in the transfer syntaxes the files are stored in and, for files
in an uncompressed little endian syntax, in the other one too: pynetdicom converts between those when the
destination takes only the other. A file in a syntax the destination accepted for no context fails its
sub-operation. Each file is read whole (pynetdicom sends a dataset, not a stream).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from bridge.dicom import status
from bridge.remotes.scu import await_reactor
from bridge.search.locate import Located
from bridge.settings import DimseSettings, MoveDestinationSettings

logger = logging.getLogger(__name__)

_MAX_CONTEXTS = 128  # presentation contexts of one association (PS3.8 9.3.2.2: odd IDs 1-255)
_LITTLE_ENDIAN = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))


class DestinationUnavailable(Exception):
    """The move destination did not accept an association (refused, rejected, or no context accepted)."""


def proposed_contexts(instances: Sequence[Located]) -> list[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs to propose, one context each: the stored syntaxes first (the
    destination gets the files as stored where it can), then the little endian alternatives."""
    exact: dict[tuple[str, str], None] = {}
    alternatives: dict[tuple[str, str], None] = {}
    for located in instances:
        exact[(located.sop_class_uid, located.transfer_syntax_uid)] = None
        if located.transfer_syntax_uid in _LITTLE_ENDIAN:
            for syntax in _LITTLE_ENDIAN:
                alternatives[(located.sop_class_uid, syntax)] = None
    ordered = list(exact) + [pair for pair in alternatives if pair not in exact]
    return ordered[:_MAX_CONTEXTS]


class MoveAssociation:
    """`with MoveAssociation(...) as move: move.send(...)`: associated on entry, released on exit."""

    def __init__(
        self,
        destination: MoveDestinationSettings,
        *,
        calling_ae_title: str,
        instances: Sequence[Located],
        timeouts: DimseSettings,
    ) -> None:
        self.destination = destination
        self.ae = AE(ae_title=calling_ae_title)
        self.ae.acse_timeout = timeouts.acse_timeout
        self.ae.dimse_timeout = timeouts.dimse_timeout
        self.ae.network_timeout = timeouts.network_timeout
        self.ae.connection_timeout = timeouts.acse_timeout
        for sop_class, syntax in proposed_contexts(instances):
            self.ae.add_requested_context(sop_class, [syntax])
        self.assoc: Any = None

    def __enter__(self) -> MoveAssociation:
        destination = self.destination
        assoc = self.ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
        if not assoc.is_established:
            raise DestinationUnavailable(
                f"move destination {destination.ae_title} at {destination.host}:{destination.port} "
                + ("rejected the association" if assoc.is_rejected else "cannot be reached")
            )
        if not assoc.accepted_contexts:
            assoc.release()
            raise DestinationUnavailable(f"move destination {destination.ae_title} accepted no presentation context")
        self.assoc = assoc
        return self

    def send(self, located: Located, path: Path, *, originator_ae_title: str, originator_message_id: int) -> int:
        """C-STORE one instance: the destination's status, or a failure status when it cannot be sent."""
        assoc = self.assoc
        if not assoc.is_established:
            return status.PROCESSING_FAILURE  # the destination went away: the rest fails
        if not self._accepted(located):
            logger.warning(
                "C-MOVE: %s accepted no context for instance %s (%s)",
                self.destination.ae_title,
                located.sop_instance_uid,
                located.transfer_syntax_uid,
            )
            return status.SOP_CLASS_NOT_SUPPORTED
        try:
            dataset = dcmread(path)
        except (OSError, InvalidDicomError):
            logger.error("C-MOVE: the stored file of instance %s cannot be read", located.sop_instance_uid)
            return status.PROCESSING_FAILURE
        try:
            answer = assoc.send_c_store(
                dataset, originator_aet=originator_ae_title, originator_id=originator_message_id
            )
        except (ValueError, AttributeError, RuntimeError):  # cannot be encoded; the association ended
            logger.warning("C-MOVE: instance %s could not be sent", located.sop_instance_uid)
            return status.PROCESSING_FAILURE
        finally:
            await_reactor(assoc)
        return int(answer.Status) if "Status" in answer else status.PROCESSING_FAILURE

    def _accepted(self, located: Located) -> bool:
        """Whether a context takes the instance: its stored syntax, or the other little endian one."""
        syntaxes = {
            str(context.transfer_syntax[0])
            for context in self.assoc.accepted_contexts
            if context.abstract_syntax == located.sop_class_uid and context.as_scu
        }
        stored = located.transfer_syntax_uid
        return stored in syntaxes or (stored in _LITTLE_ENDIAN and bool(syntaxes & set(_LITTLE_ENDIAN)))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
