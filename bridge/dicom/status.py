"""DIMSE status codes (PS3.7 Annex C, PS3.4 Annexes B and C), named once for the SCP and the SCU sides.

pynetdicom's `Status` enum names only a few of them (success, pending, cancel, move destination unknown):
those are taken from it, the others are named here.
"""

from __future__ import annotations

from pynetdicom.status import Status

SUCCESS = int(Status.SUCCESS)
PENDING = int(Status.PENDING)
PENDING_WITH_WARNINGS = 0xFF01  # C-FIND: optional keys not supported
CANCEL = int(Status.CANCEL)
MOVE_DESTINATION_UNKNOWN = int(Status.MOVE_DESTINATION_UNKNOWN)
OUT_OF_RESOURCES = 0xA700
OUT_OF_RESOURCES_MATCHES = 0xA701  # C-MOVE/C-GET: unable to calculate the number of matches
OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702  # C-MOVE/C-GET: unable to perform sub-operations
SOP_CLASS_NOT_SUPPORTED = 0x0122
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # C-FIND/C-MOVE/C-GET: identifier does not match the SOP class
CANNOT_UNDERSTAND = 0xC000  # C-FIND/C-MOVE/C-GET: unable to process
PROCESSING_FAILURE = 0x0110
SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
