"""Cohorts: the one query model of the research side (filters), run as SQL (query), saved and frozen (saved)."""
