"""Process plumbing shared by every command: the fork server of the ingest workers, signals, logging set-up,
per-process caches."""
