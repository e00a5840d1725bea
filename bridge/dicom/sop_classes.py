"""The SOP classes the bridge speaks, by the names pydicom and pynetdicom give them.

Storage: every storage SOP class either library knows, retired ones included (old archives still send
Ultrasound Image Storage 1.2.840.10008.5.1.4.1.1.6, say). pydicom names only current SOP classes in
`pydicom.uid` and pynetdicom lists only its own in `AllStoragePresentationContexts`; the one listing of
retired ones is pydicom's UID dictionary, `pydicom._uid_dict`, which has no public counterpart.
"""

from __future__ import annotations

from functools import cache

from pydicom._uid_dict import UID_dictionary  # private: the only listing of retired storage SOP classes
from pydicom.uid import MediaStorageDirectoryStorage
from pynetdicom import AllStoragePresentationContexts

# pynetdicom generates these names at import: real, public, but invisible to mypy
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    LabelMapSegmentationStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

__all__ = [
    "LabelMapSegmentationStorage",
    "StudyRootQueryRetrieveInformationModelFind",
    "StudyRootQueryRetrieveInformationModelGet",
    "StudyRootQueryRetrieveInformationModelMove",
    "Verification",
    "storage_sop_classes",
]


@cache
def storage_sop_classes() -> tuple[str, ...]:
    """Every storage SOP class pydicom or pynetdicom knows, sorted; not DICOMDIR (a file-set's index)."""
    known = {uid for uid, entry in UID_dictionary.items() if entry[1] == "SOP Class" and entry[0].endswith("Storage")}
    known |= {str(context.abstract_syntax) for context in AllStoragePresentationContexts}
    known |= {str(LabelMapSegmentationStorage)}  # newer than pydicom 3.0's dictionary
    return tuple(sorted(known - {str(MediaStorageDirectoryStorage)}))
