"""Pulling studies from a hospital PACS: the puller, one pull run (job), its filters, and the schedules that
start runs from `serve`."""
