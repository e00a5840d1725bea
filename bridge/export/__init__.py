"""Exports of cohorts to folders: DICOM files with a manifest, or NIfTI volumes."""
