"""The plugin's one table, ``scan_allowances``, on its own metadata (never the core's)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

#: Where an allowance comes from: the admin API, or a ``modelreg.scan.allow.<name>`` setting.
API, SETTINGS = "api", "settings"

allowances = sa.Table(
    "scan_allowances", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("models", sa.String(200), nullable=False),
    sa.Column("globals", sa.JSON, nullable=False),
    sa.Column("description", sa.String(500), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
)
