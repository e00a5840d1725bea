"""dicomweb: the attributes QIDO-RS answers from the index (study time, patient sex, image size and frames)

Rows indexed before this revision keep these columns empty (NULL): QIDO-RS then answers the attribute
without a value.

Revision ID: 0004_dicomweb
Revises: 0003_cohorts
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0004_dicomweb'
down_revision = '0003_cohorts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('timepoint') as batch:
        batch.add_column(sa.Column('study_time', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch.add_column(sa.Column('patient_sex', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
    with op.batch_alter_table('instance') as batch:
        for column in ('rows', 'columns', 'bits_allocated', 'number_of_frames'):
            batch.add_column(sa.Column(column, sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instance') as batch:
        for column in ('number_of_frames', 'bits_allocated', 'columns', 'rows'):
            batch.drop_column(column)
    with op.batch_alter_table('timepoint') as batch:
        batch.drop_column('patient_sex')
        batch.drop_column('study_time')
