"""Adapters to the hospital PACS: DICOMweb (QIDO-RS, WADO-RS) and DIMSE (C-ECHO, C-FIND, C-MOVE, C-GET)."""
