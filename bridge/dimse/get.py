"""C-GET sub-operations: C-STORE requests sent back over the requesting association, on the storage
contexts whose SCP role the requestor took in role selection (PS3.4 C.4.3, PS3.7 D.3.3.4).

A file goes as stored, streamed from the store after its file meta information, when the requestor
accepted its SOP class in its transfer syntax; a file in an uncompressed little endian syntax goes in the
other one when only that was accepted (read and re-encoded by pydicom); anything else fails its
sub-operation (no decompression here).
"""

from __future__ import annotations

import io
import logging
from typing import BinaryIO, Protocol

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode, split_dataset

from bridge.dicom import status
from bridge.dimse import messages
from bridge.dimse.qr_service import QueryRetrieveService
from bridge.search.locate import Located

logger = logging.getLogger(__name__)

_CONVERTIBLE = {
    str(ExplicitVRLittleEndian): (str(ImplicitVRLittleEndian), True),  # to: the other, is it implicit VR
    str(ImplicitVRLittleEndian): (str(ExplicitVRLittleEndian), False),
}


class StoreChannel(Protocol):
    """What a C-GET sender needs of the association it sends on."""

    def storage_contexts(self, sop_class_uid: str) -> dict[str, int]:
        """Transfer syntax -> context ID of the accepted contexts of the SOP class we may send on."""
        ...

    def next_message_id(self) -> int: ...

    def send_message(self, context_id: int, command: bytes, dataset: BinaryIO, length: int) -> None: ...

    def store_response(self, message_id: int) -> int:
        """Wait for the C-STORE-RSP to `message_id`: its status."""
        ...


class GetSender:
    def __init__(self, channel: StoreChannel, service: QueryRetrieveService) -> None:
        self.channel = channel
        self.service = service

    def __call__(self, located: Located) -> int:
        contexts = self.channel.storage_contexts(located.sop_class_uid)
        if not contexts:
            logger.warning("C-GET: no context accepted (SCP role) for the SOP class of %s", located.sop_instance_uid)
            return status.SOP_CLASS_NOT_SUPPORTED
        path = self.service.path(located)
        message_id = self.channel.next_message_id()
        command = messages.encode_store_request(
            message_id=message_id, sop_class_uid=located.sop_class_uid, sop_instance_uid=located.sop_instance_uid
        )
        stored = located.transfer_syntax_uid
        try:  # everything that can fail before the first byte is sent: after that, the message must complete
            if stored in contexts:
                context_id = contexts[stored]
                _meta, offset = split_dataset(path)
                dataset: BinaryIO = path.open("rb")
                length = dataset.seek(0, io.SEEK_END) - offset
                dataset.seek(offset)
            elif stored in _CONVERTIBLE and _CONVERTIBLE[stored][0] in contexts:
                other, implicit = _CONVERTIBLE[stored]
                context_id = contexts[other]
                data = encode(dcmread(path), implicit, True)
                if data is None:
                    return status.PROCESSING_FAILURE
                dataset, length = io.BytesIO(data), len(data)
            else:
                logger.warning(
                    "C-GET: instance %s is stored in %s, which the requestor did not accept",
                    located.sop_instance_uid,
                    stored,
                )
                return status.SOP_CLASS_NOT_SUPPORTED
        except (OSError, InvalidDicomError):
            logger.error("C-GET: the stored file of instance %s cannot be read", located.sop_instance_uid)
            return status.PROCESSING_FAILURE
        with dataset:
            self.channel.send_message(context_id, command, dataset, length)
        return self.channel.store_response(message_id)
