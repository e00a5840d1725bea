"""DIMSE edge: the DICOM listener. Protocol in, one service call, status out."""
