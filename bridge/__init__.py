"""pacs-bridge: the service between hospital PACS and oncology research."""
