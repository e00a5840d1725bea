"""De-identification (DICOM PS3.15 Annex E): a pure library, Dataset in, Dataset and UID mapping out."""
