"""DICOM attribute search over the index: the levels, matching and statements shared by QIDO-RS and C-FIND."""
