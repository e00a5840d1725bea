"""index_generation: a counter that database triggers bump on every write to the tables a cohort tally reads

`bridge.cohorts.tallies` caches a cohort's tally (its total, and the subjects that hold a page) under this
generation; a write to any of these tables, by any path or process, bumps it in the writer's own transaction,
so a tally read in a snapshot that sees the write no longer matches. A later revision whose cohort filters
read another table adds that table's triggers.

Revision ID: 0008_index_generation
Revises: 0007_series_copies
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0008_index_generation'
down_revision = '0007_series_copies'
branch_labels = None
depends_on = None

WATCHED = ('project', 'subject', 'timepoint', 'series', 'annotation', 'reviewdecision')
_BUMP = 'UPDATE indexgeneration SET value = value + 1 WHERE id = 1'
_EVENTS = ('INSERT', 'UPDATE', 'DELETE')


def upgrade() -> None:
    op.create_table(
        'indexgeneration',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('value', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.execute('INSERT INTO indexgeneration (id, value) VALUES (1, 0)')
    if op.get_bind().dialect.name == 'postgresql':
        # once per statement (an executemany of a thousand rows bumps it a thousand times at most)
        op.execute(
            'CREATE FUNCTION bump_index_generation() RETURNS trigger LANGUAGE plpgsql AS '
            f"$$ BEGIN {_BUMP}; RETURN NULL; END $$"
        )
        for table in WATCHED:
            op.execute(
                f'CREATE TRIGGER {table}_bumps_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} '
                'FOR EACH STATEMENT EXECUTE FUNCTION bump_index_generation()'
            )
    else:  # SQLite has row triggers only
        for table in WATCHED:
            for event in _EVENTS:
                op.execute(
                    f'CREATE TRIGGER {table}_{event.lower()}_bumps_generation AFTER {event} ON {table} '
                    f'BEGIN {_BUMP}; END'
                )


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for table in WATCHED:
            op.execute(f'DROP TRIGGER {table}_bumps_generation ON {table}')
        op.execute('DROP FUNCTION bump_index_generation()')
    else:
        for table in WATCHED:
            for event in _EVENTS:
                op.execute(f'DROP TRIGGER {table}_{event.lower()}_bumps_generation')
    op.drop_table('indexgeneration')
