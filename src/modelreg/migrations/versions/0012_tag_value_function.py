"""PostgreSQL: modelreg_version_tag_value, a version tag's value read with a fresh snapshot

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 19:00:00.000000

A tag's write on PostgreSQL is one statement (src/modelreg/registry/commands.py,
``_set_tag_statement``): it takes the version's row lock, then reads the tag's previous value
for the audit event's ``before``.  A statement sees the database as of its start, before it
waited for that lock, so a tag another writer added or changed meanwhile would be missing or
stale; a ``VOLATILE`` function's query takes a snapshot of its own when it runs, after the
lock was granted.
Nothing on SQLite or MariaDB, where the write takes more than one statement.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION modelreg_version_tag_value(tag_version_id integer, "
            "tag_key varchar) RETURNS varchar LANGUAGE sql VOLATILE AS "
            "$$ SELECT value FROM version_tags "
            "WHERE version_id = tag_version_id AND key = tag_key $$")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION modelreg_version_tag_value(integer, varchar)")
