"""DICOMweb (PS3.18) over the de-identified store: QIDO-RS from the index, WADO-RS from the files, STOW-RS
into the spool, under `/dicomweb` (every project the token reads) and `/dicomweb/projects/NAME`."""
