"""DICOM itself, with no service in it: Part 10 files read and written fast (pydicom their tested reference),
raw-element access and encoding, SOP classes, status codes, our implementation identity."""
