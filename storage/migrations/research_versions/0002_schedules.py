"""pull schedules: where each one stands

Revision ID: 0002_schedules
Revises: 0001_research
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002_schedules'
down_revision = '0001_research'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('schedulestate',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('runs', sa.Integer(), nullable=False),
    sa.Column('last_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_ok', sa.Boolean(), nullable=True),
    sa.Column('last_result', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=True),
    sa.Column('watermark', sa.Date(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('schedulestate')
