"""What the tables of both sides share: timestamps in UTC."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, DateTime


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timestamp_column() -> Column:  # type: ignore[type-arg]
    """A timezone-aware, required timestamp defaulting to now."""
    return Column(DateTime(timezone=True), nullable=False, default=utcnow)
