"""Who we are in DICOM: the implementation class UID and version name written into file meta information
and association negotiation."""

from __future__ import annotations

from pydicom.uid import UID

# 2.25 + a UUIDv5 of the project: ours, needs no registration
IMPLEMENTATION_CLASS_UID = UID("2.25.324179283464283168909547722776067492784")
IMPLEMENTATION_VERSION = "PACS_BRIDGE_01"
