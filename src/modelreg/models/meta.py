"""The declarative base and the column types that must behave the same on every database."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase

# A naming convention makes constraint names deterministic, so Alembic migrations are too.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Table options applied to every table: MariaDB/MySQL get utf8mb4 with a binary collation, so
#: that string comparison (``=``, ``LIKE``) is case-sensitive there as on PostgreSQL and SQLite.
TABLE_ARGS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

#: Timestamps keep microseconds everywhere (MySQL's DATETIME drops them by default), stored as
#: naive UTC; :func:`utcnow` produces them.
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

#: JSON documents; MariaDB stores them as LONGTEXT, which SQLAlchemy handles.
JSONDoc = sa.JSON(none_as_null=True)


def utcnow() -> dt.datetime:
    """The current time in UTC, naive, with microseconds: the form every timestamp is stored in."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of the core's tables; plugins own tables on their own metadata."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
