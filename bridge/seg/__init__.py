"""DICOM SEG: build BINARY segmentations of reviewed annotations, and read SEGs that arrive from outside."""
