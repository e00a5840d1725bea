"""Ingest: admission of received instances, de-identification into the store and index, quarantine of what
fails, the one worker pool that drains the spool, folder import, and the DICOM keyword -> column map."""
