"""cohort_speed: indexes (and any denormalised columns) the cohort query needs at full scale

Kept empty: databases have run it as an empty placeholder that 0006_annotations follows, so the cohort
indexes and the series' copies came as 0007_series_copies.

Revision ID: 0005_cohort_speed
Revises: 0004_dicomweb
Create Date: 2026-12-07
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0005_cohort_speed'
down_revision = '0004_dicomweb'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
