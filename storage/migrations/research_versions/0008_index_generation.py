"""index_generation: a counter that database triggers move on every write to the tables a cohort tally reads

`bridge.cohorts.tallies` keeps a cohort's tally (its total, and the subjects that hold a page) with this
generation; a write to any of these tables, by any path or process, moves it on, so a kept tally is not used
on data it did not count. A later revision whose cohort filters read another table adds that table's
triggers.

- SQLite: a one-row table, bumped by row triggers in the writer's transaction (writers are serialised).
- PostgreSQL: a sequence, advanced by statement triggers that also take a shared advisory lock held to the
  end of the writer's transaction. No row is updated: concurrent writers never wait on each other for it
  (a one-row table did, and two ingest transactions deadlocked on it). The lock's keys are
  `bridge.cohorts.tallies.WRITERS_LOCK_CLASS` and the hash of the tables' schema.

Revision ID: 0008_index_generation
Revises: 0007_series_copies
Create Date: 2026-12-08
"""
from alembic import op
import sqlalchemy as sa


revision = '0008_index_generation'
down_revision = '0007_series_copies'
branch_labels = None
depends_on = None

WATCHED = ('project', 'subject', 'timepoint', 'series', 'annotation', 'reviewdecision')
WRITERS_LOCK_CLASS = 7062001  # as bridge.cohorts.tallies (a migration does not import the application)
_SQLITE_BUMP = 'UPDATE indexgeneration SET value = value + 1 WHERE id = 1'
_EVENTS = ('INSERT', 'UPDATE', 'DELETE')


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('CREATE SEQUENCE index_generation')
        op.execute(
            'CREATE FUNCTION bump_index_generation() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN '
            f'PERFORM pg_advisory_xact_lock_shared({WRITERS_LOCK_CLASS}, hashtext(TG_TABLE_SCHEMA)); '
            "PERFORM nextval(format('%I.index_generation', TG_TABLE_SCHEMA)); "
            'RETURN NULL; END $$'
        )
        for table in WATCHED:
            op.execute(
                f'CREATE TRIGGER {table}_bumps_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} '
                'FOR EACH STATEMENT EXECUTE FUNCTION bump_index_generation()'
            )
        return
    op.create_table(
        'indexgeneration',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('value', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.execute('INSERT INTO indexgeneration (id, value) VALUES (1, 0)')
    for table in WATCHED:  # SQLite has row triggers only
        for event in _EVENTS:
            op.execute(
                f'CREATE TRIGGER {table}_{event.lower()}_bumps_generation AFTER {event} ON {table} '
                f'BEGIN {_SQLITE_BUMP}; END'
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for table in WATCHED:
            op.execute(f'DROP TRIGGER {table}_bumps_generation ON {table}')
        op.execute('DROP FUNCTION bump_index_generation()')
        op.execute('DROP SEQUENCE index_generation')
        return
    for table in WATCHED:
        for event in _EVENTS:
            op.execute(f'DROP TRIGGER {table}_{event.lower()}_bumps_generation')
    op.drop_table('indexgeneration')
