"""The research side's HTTP API (FastAPI, served by `serve`): the index, cohorts, snapshots, health, metrics."""
