"""cohorts: timepoint index and label source, saved cohorts, snapshots, API users, query indexes

Revision ID: 0003_cohorts
Revises: 0002_schedules
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003_cohorts'
down_revision = '0002_schedules'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('timepoint') as batch:
        batch.add_column(sa.Column('timepoint_index', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('label_source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
    # labels already indexed came with the data; indexes follow the intervals (0 = baseline)
    op.execute("UPDATE timepoint SET label_source = 'received' WHERE label IS NOT NULL")
    op.execute(
        "UPDATE timepoint SET timepoint_index = (SELECT COUNT(*) FROM timepoint AS other"
        " WHERE other.subject_id = timepoint.subject_id AND other.days_from_baseline IS NOT NULL"
        " AND (other.days_from_baseline < timepoint.days_from_baseline"
        " OR (other.days_from_baseline = timepoint.days_from_baseline AND other.id < timepoint.id)))"
        " WHERE days_from_baseline IS NOT NULL"
    )
    op.create_index('ix_timepoint_subject_days', 'timepoint', ['subject_id', 'days_from_baseline'])
    op.create_index('ix_series_project_modality', 'series', ['project_id', 'modality'])
    op.create_table('savedcohort',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('query', sa.Text(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'name')
    )
    op.create_index(op.f('ix_savedcohort_project_id'), 'savedcohort', ['project_id'], unique=False)
    op.create_table('snapshot',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=96), nullable=False),
    sa.Column('cohort', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('query', sa.Text(), nullable=False),
    sa.Column('content_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('series_count', sa.Integer(), nullable=False),
    sa.Column('instance_count', sa.Integer(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'name')
    )
    op.create_index(op.f('ix_snapshot_project_id'), 'snapshot', ['project_id'], unique=False)
    op.create_table('snapshotseries',
    sa.Column('snapshot_id', sa.Integer(), nullable=False),
    sa.Column('series_uid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('row', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['snapshot_id'], ['snapshot.id'], ),
    sa.PrimaryKeyConstraint('snapshot_id', 'series_uid')
    )
    op.create_table('snapshotinstance',
    sa.Column('snapshot_id', sa.Integer(), nullable=False),
    sa.Column('sop_instance_uid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('series_uid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.ForeignKeyConstraint(['snapshot_id'], ['snapshot.id'], ),
    sa.PrimaryKeyConstraint('snapshot_id', 'sop_instance_uid')
    )
    op.create_table('apiuser',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('projects', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('token_hash')
    )


def downgrade() -> None:
    op.drop_table('apiuser')
    op.drop_table('snapshotinstance')
    op.drop_table('snapshotseries')
    op.drop_index(op.f('ix_snapshot_project_id'), table_name='snapshot')
    op.drop_table('snapshot')
    op.drop_index(op.f('ix_savedcohort_project_id'), table_name='savedcohort')
    op.drop_table('savedcohort')
    op.drop_index('ix_series_project_modality', table_name='series')
    op.drop_index('ix_timepoint_subject_days', table_name='timepoint')
    with op.batch_alter_table('timepoint') as batch:
        batch.drop_column('label_source')
        batch.drop_column('timepoint_index')
