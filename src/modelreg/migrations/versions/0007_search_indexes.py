"""search indexes: model names in byte order on every database, a covering index of aliases

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 16:30:00.000000

PostgreSQL compares ``models.normalized_name`` with the database's collation, and only a
``C`` collation lets a btree answer ``LIKE 'prefix%'`` *and* ``ORDER BY`` at once: under
``en_US.UTF-8`` or even ``C.UTF-8`` (PostgreSQL 15) the prefix search of the first page walked
the unique index in name order and filtered row by row (33,000 rows read for 100 shown at
100,000 models), because the ``text_pattern_ops`` index that matches the prefix cannot give
the order.  The column gets ``COLLATE "C"`` (byte order, which for the ASCII of normalized
names is code-point order, as SQLite's ``BINARY`` and MariaDB's ``utf8mb4_bin`` already sort
them), so the unique index serves both; the ``text_pattern_ops`` index, and its plain copies
on SQLite and MariaDB, are then redundant and dropped.

``ix_aliases_model_id_name_version_id`` covers what a page of models reads of its aliases:
without it PostgreSQL joined a page's 100 models to the aliases with a sequential scan of
the whole table (2.5 ms at 20,000 aliases, growing with them) rather than 100 probes of the
primary key that each also read the row; with it, 100 index-only probes (0.3 ms).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_aliases_model_id_name_version_id", "aliases",
                    ["model_id", "name", "version_id"])
    op.drop_index("ix_models_normalized_name_pattern", table_name="models")
    if op.get_bind().dialect.name == "postgresql":
        # Rebuilds uq_models_normalized_name in the new collation.
        op.execute('ALTER TABLE models ALTER COLUMN normalized_name TYPE VARCHAR(128) '
                   'COLLATE "C"')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE models ALTER COLUMN normalized_name TYPE VARCHAR(128) "
                   "COLLATE pg_catalog.\"default\"")
    op.create_index(
        "ix_models_normalized_name_pattern",
        "models",
        ["normalized_name"],
        postgresql_ops={"normalized_name": "text_pattern_ops"},
    )
    op.drop_index("ix_aliases_model_id_name_version_id", table_name="aliases")
