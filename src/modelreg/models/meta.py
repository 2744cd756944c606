"""The declarative base and the column types that must behave the same on every database."""

from __future__ import annotations

import datetime as dt
import re

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


def isotime(value: dt.datetime | None) -> str | None:
    """Render a stored (naive UTC) timestamp as ISO 8601 with a ``Z``."""
    return None if value is None else value.isoformat(timespec="microseconds") + "Z"


_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?)?"
)


def parse_timestamp(text: str) -> dt.datetime | None:
    """An ISO-8601 timestamp from a request, in the stored form (naive UTC); ``None`` if
    ``text`` is not one or it falls outside the years 1 to 9999 once moved to UTC.

    Accepted: ``2026-01-01`` (midnight UTC), ``2026-01-01T12:00:00Z``,
    ``2026-01-01T12:00:00.5+02:00``; without an offset, UTC.
    """
    if not _TIMESTAMP.fullmatch(text):
        return None
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        return None
    return parsed


class Base(DeclarativeBase):
    """Declarative base of the core's tables; plugins own tables on their own metadata."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
