"""`python -m bridge` is the `pacs-bridge` command."""

from bridge.cli import main

main()
