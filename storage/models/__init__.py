"""The tables, by side: `research` (the de-identified index, audit, schedules) and `vault` (what re-identifies,
with its own metadata so that it can live in its own database)."""
