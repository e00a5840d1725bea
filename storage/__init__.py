"""Persistence of pacs-bridge: tables, database, migrations, file store, vault. Knows nothing of DICOM networking."""
