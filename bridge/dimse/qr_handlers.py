"""The Query/Retrieve SCP (PS3.4 Annex C): C-FIND, C-MOVE and C-GET requests in, responses out.

Each handler is given the whole request (command and identifier) by the association, asks the
`QueryRetrieveService` what matches, and answers through the association (`Peer`):
- C-FIND: one Pending response per match, then Success (Cancel when the peer cancels);
- C-MOVE: the instances go over a new association to the project's configured destination (0xA801 when the
  title is not one of them), a Pending response with the sub-operation counts after each;
- C-GET: the instances go back over the same association as C-STORE sub-operations, on the contexts whose
  SCP role the requestor took; a Pending response after each.
A retrieve ends with Success, Warning 0xB000 when some sub-operations failed or warned (the identifier lists
the failed instances), 0xA702 when all failed, Cancel when cancelled. Every operation is audited with its
project, caller and counts: never keys or values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pydicom.dataset import Dataset
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category
from sqlalchemy.exc import SQLAlchemyError

from bridge.dicom import status
from bridge.dimse import messages
from bridge.dimse.identifier import (
    IdentifierError,
    decode_identifier,
    failed_instances,
    read_find,
    read_retrieve,
)
from bridge.dimse.identifier import answer as answer_row
from bridge.dimse.information_models import MODELS, InformationModel, Operation
from bridge.dimse.move import DestinationUnavailable, MoveAssociation
from bridge.dimse.qr_service import QueryRetrieveService
from bridge.search.locate import Located
from bridge.search.matching import MatchError
from bridge.settings import DimseSettings

logger = logging.getLogger(__name__)


class Peer(Protocol):
    """What a handler needs of the association it answers on."""

    project: str
    calling: str
    called: str

    def transfer_syntax(self, context_id: int) -> tuple[bool, bool]:
        """(implicit VR, little endian) of an accepted context."""
        ...

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
    ) -> None: ...

    def cancelled(self, message_id: int) -> bool:
        """Whether the peer has sent a C-CANCEL-RQ for the request (without waiting for one)."""
        ...


class Sender(Protocol):
    """Sends one instance as a C-STORE sub-operation: the status of its C-STORE response."""

    def __call__(self, located: Located) -> int: ...


@dataclass
class SubOperations:
    """The counts of a retrieve's C-STORE sub-operations (PS3.4 C.4.2.1.6, C.4.3.1.3)."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def record(self, sop_instance_uid: str, answer: int) -> None:
        self.remaining -= 1
        category = code_to_category(answer)
        if category == STATUS_SUCCESS:
            self.completed += 1
        elif category == STATUS_WARNING:
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(sop_instance_uid)

    def counts(self, *, final: bool) -> messages.SubOperationCounts:
        return messages.SubOperationCounts(None if final else self.remaining, self.completed, self.failed, self.warning)

    def final_status(self) -> int:
        if not self.failed and not self.warning:
            return status.SUCCESS
        if self.failed and not self.completed and not self.warning:
            return status.OUT_OF_RESOURCES_SUB_OPERATIONS
        return status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES

    def summary(self) -> str:
        unsent = f", {self.remaining} not sent (cancelled)" if self.remaining else ""
        return f"{self.completed} sent, {self.warning} with warnings, {self.failed} failed{unsent}"


_RESPONSE = {
    Operation.FIND: messages.C_FIND_RSP,
    Operation.MOVE: messages.C_MOVE_RSP,
    Operation.GET: messages.C_GET_RSP,
}


class QueryRetrieveScp:
    """The handlers of one listener; `get_sender` makes the C-STORE sender of a C-GET on its association."""

    def __init__(
        self, service: QueryRetrieveService, *, timeouts: DimseSettings, audit: Callable[[str, str], None]
    ) -> None:
        self.service = service
        self.timeouts = timeouts
        self.audit = audit

    def handle(
        self, peer: Peer, context_id: int, request: messages.Command, data: bytes, get_sender: Callable[[], Sender]
    ) -> None:
        """Serve a C-FIND, C-MOVE or C-GET request whose identifier is `data`, answering every response."""
        model = MODELS[request.sop_class_uid]
        response = _RESPONSE[model.operation]
        try:
            identifier = decode_identifier(data, peer.transfer_syntax(context_id))
            if model.operation is Operation.FIND:
                self.find(peer, context_id, request, identifier, model)
            elif model.operation is Operation.MOVE:
                self.move(peer, context_id, request, identifier, model)
            else:
                self.get(peer, context_id, request, identifier, model, get_sender())
        except IdentifierError as error:
            logger.warning("%s from %s refused: %s", model.operation.value, peer.calling, error)
            peer.respond(context_id, request, response, error.status, error_comment=str(error))
        except MatchError as error:
            logger.warning("%s from %s refused: %s", model.operation.value, peer.calling, error)
            peer.respond(context_id, request, response, status.CANNOT_UNDERSTAND, error_comment=str(error))
        except SQLAlchemyError:  # the index is down or locked: the peer may try again
            logger.exception("%s from %s: the index could not be read", model.operation.value, peer.calling)
            peer.respond(
                context_id, request, response, status.CANNOT_UNDERSTAND, error_comment="the index could not be read"
            )

    def find(
        self, peer: Peer, context_id: int, request: messages.Command, identifier: Dataset, model: InformationModel
    ) -> None:
        query = read_find(identifier, model)
        matches = 0
        outcome = status.SUCCESS
        for page in self.service.find(peer.project, query):
            for row in page.rows:
                found = answer_row(query, page.attributes, row, retrieve_ae_title=peer.called)
                peer.respond(context_id, request, messages.C_FIND_RSP, query.pending_status, identifier=found)
                matches += 1
                if peer.cancelled(request.message_id):
                    outcome = status.CANCEL
                    break
            if outcome == status.CANCEL:
                break
        peer.respond(context_id, request, messages.C_FIND_RSP, outcome)
        self.audit(
            "dimse.find",
            f"{peer.calling} searched project {peer.project} ({model.name}, {query.level.value} level): "
            f"{matches} matches{' (cancelled)' if outcome == status.CANCEL else ''}",
        )

    def move(
        self, peer: Peer, context_id: int, request: messages.Command, identifier: Dataset, model: InformationModel
    ) -> None:
        destination = self.service.destination(peer.project, request.move_destination)
        if destination is None:
            logger.warning("C-MOVE from %s: unknown move destination %r", peer.calling, request.move_destination)
            peer.respond(
                context_id,
                request,
                messages.C_MOVE_RSP,
                status.MOVE_DESTINATION_UNKNOWN,
                error_comment=f"move destination {request.move_destination} is not configured for this project",
            )
            self.audit(
                "dimse.move.refused",
                f"{peer.calling} asked project {peer.project} to move to unknown {request.move_destination!r}",
            )
            return
        query = read_retrieve(identifier, model)
        instances = self.service.instances(peer.project, query)
        progress = SubOperations(remaining=len(instances))
        where = f"to {destination.ae_title}"
        if instances:
            try:
                with MoveAssociation(
                    destination, calling_ae_title=peer.called, instances=instances, timeouts=self.timeouts
                ) as association:

                    def send(located: Located) -> int:
                        return association.send(
                            located,
                            self.service.path(located),
                            originator_ae_title=peer.calling,
                            originator_message_id=request.message_id,
                        )

                    self._retrieve(peer, context_id, request, messages.C_MOVE_RSP, instances, progress, send)
            except DestinationUnavailable as error:
                logger.warning("C-MOVE from %s: %s", peer.calling, error)
                progress = SubOperations(remaining=0, failed=len(instances))
                peer.respond(
                    context_id,
                    request,
                    messages.C_MOVE_RSP,
                    status.OUT_OF_RESOURCES_SUB_OPERATIONS,
                    counts=progress.counts(final=True),
                    error_comment=str(error),
                )
        else:
            peer.respond(context_id, request, messages.C_MOVE_RSP, status.SUCCESS, counts=progress.counts(final=True))
        self._audit_retrieve("dimse.move", peer, model, query.level.value, progress, where)

    def get(
        self,
        peer: Peer,
        context_id: int,
        request: messages.Command,
        identifier: Dataset,
        model: InformationModel,
        send: Sender,
    ) -> None:
        query = read_retrieve(identifier, model)
        instances = self.service.instances(peer.project, query)
        progress = SubOperations(remaining=len(instances))
        self._retrieve(peer, context_id, request, messages.C_GET_RSP, instances, progress, send)
        self._audit_retrieve("dimse.get", peer, model, query.level.value, progress, "over its association")

    def _retrieve(
        self,
        peer: Peer,
        context_id: int,
        request: messages.Command,
        response: int,
        instances: list[Located],
        progress: SubOperations,
        send: Sender,
    ) -> None:
        """One sub-operation per instance, a Pending response after each but the last, then the final one."""
        for located in instances:
            if peer.cancelled(request.message_id):
                peer.respond(
                    context_id,
                    request,
                    response,
                    status.CANCEL,
                    identifier=failed_instances(progress.failed_uids) if progress.failed_uids else None,
                    counts=progress.counts(final=False),
                )
                return
            progress.record(located.sop_instance_uid, send(located))
            if progress.remaining:
                peer.respond(context_id, request, response, status.PENDING, counts=progress.counts(final=False))
        final = progress.final_status()
        peer.respond(
            context_id,
            request,
            response,
            final,
            identifier=failed_instances(progress.failed_uids) if final != status.SUCCESS else None,
            counts=progress.counts(final=True),
        )

    def _audit_retrieve(
        self, action: str, peer: Peer, model: InformationModel, level: str, progress: SubOperations, where: str
    ) -> None:
        self.audit(
            action,
            f"{peer.calling} retrieved from project {peer.project} ({model.name}, {level} level) {where}: "
            f"{progress.summary()}",
        )
