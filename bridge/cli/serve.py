"""`pacs-bridge serve`: the service, until SIGTERM or Ctrl-C."""

from __future__ import annotations

from bridge.cli.common import ConfigOption, load


def serve_command(config: ConfigOption = None) -> None:
    """Run the DICOM listener (C-ECHO, C-STORE), the ingest workers, the pull schedules and the HTTP API until
    SIGTERM or Ctrl-C."""
    from bridge.serve import serve as run_service

    run_service(load(config))
