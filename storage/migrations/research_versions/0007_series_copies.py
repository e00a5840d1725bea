"""series_copies: each series carries its timepoint's subject, date and place on the clock; cohort indexes

A cohort query filters and counts series: with these copies (kept in step by `storage.index`) it needs no
join, and two covering indexes answer its counts without reading the table. Series indexed before this
revision get their copies here, from their timepoints.

Revision ID: 0007_series_copies
Revises: 0006_annotations
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0007_series_copies'
down_revision = '0006_annotations'
branch_labels = None
depends_on = None

_COPIES = (
    ('subject_id', 'subject_id', sa.Integer()),
    ('study_date', 'study_date', sa.Date()),
    ('days_from_baseline', 'days_from_baseline', sa.Integer()),
    ('timepoint_index', 'timepoint_index', sa.Integer()),
    ('timepoint_label', 'label', sqlmodel.sql.sqltypes.AutoString(length=64)),
)
# the cohort tally's covering indexes (see storage.models.research.Series)
_INDEXES = {
    'ix_series_cohort': (
        'project_id', 'modality', 'body_part', 'subject_id', 'timepoint_id', 'timepoint_index', 'slice_thickness'
    ),
    'ix_series_cohort_thickness': (
        'project_id', 'modality', 'slice_thickness', 'subject_id', 'timepoint_id', 'timepoint_index'
    ),
}


def upgrade() -> None:
    with op.batch_alter_table('series') as batch:
        for column, _, type_ in _COPIES:
            batch.add_column(sa.Column(column, type_, nullable=True))
    # one row-valued subquery per series (SQLite >= 3.15 and PostgreSQL both take it)
    targets = ', '.join(column for column, _, _ in _COPIES)
    sources = ', '.join(f'timepoint.{source}' for _, source, _ in _COPIES)
    op.execute(
        f'UPDATE series SET ({targets}) = (SELECT {sources} FROM timepoint WHERE timepoint.id = series.timepoint_id)'
    )
    for name, columns in _INDEXES.items():
        op.create_index(name, 'series', list(columns))


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, table_name='series')
    with op.batch_alter_table('series') as batch:
        for column, _, _ in reversed(_COPIES):
            batch.drop_column(column)
