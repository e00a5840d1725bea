"""Delivery of approved segmentations as DICOM SEG: the outbox, re-identification, the senders."""
