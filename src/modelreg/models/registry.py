"""Tables of the registry's domain: models, versions, tags, aliases and alias history."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .meta import TABLE_ARGS, Base, JSONDoc, Timestamp, utcnow

NAME_LENGTH = 128
TAG_KEY_LENGTH = 128
TAG_VALUE_LENGTH = 255
ACTOR_LENGTH = 128


class Model(Base):
    """A registered model: a name, its versions and its aliases."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The name as the user gave it (a URL-safe slug).
    name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))
    #: Case-folded NFKC form of the name: unique, so look-alike names cannot coexist.  Byte
    #: order on every database (``COLLATE "C"`` on PostgreSQL, migration 0007), so that its
    #: unique index answers both ``LIKE 'prefix%'`` and ``ORDER BY`` (keyset pages by name).
    normalized_name: Mapped[str] = mapped_column(
        sa.String(NAME_LENGTH).with_variant(
            postgresql.VARCHAR(NAME_LENGTH, collation="C"), "postgresql"),
        unique=True,
    )
    description: Mapped[str] = mapped_column(sa.Text, default="")
    #: The number the next version of this model gets; only ever incremented.
    next_version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(sa.String(ACTOR_LENGTH))
    updated_by: Mapped[str | None] = mapped_column(sa.String(ACTOR_LENGTH))

    tags: Mapped[list[ModelTag]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="ModelTag.key"
    )
    aliases: Mapped[list[Alias]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="Alias.name",
        overlaps="model",
    )

    __table_args__ = (
        sa.Index("ix_models_created_at_id", "created_at", "id"),
        sa.Index("ix_models_updated_at_id", "updated_at", "id"),
        TABLE_ARGS,
    )


class ModelTag(Base):
    """A key/value tag on a model."""

    __tablename__ = "model_tags"

    model_id: Mapped[int] = mapped_column(
        sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(sa.String(TAG_KEY_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(TAG_VALUE_LENGTH), default="")

    __table_args__ = (sa.Index("ix_model_tags_key_value", "key", "value"), TABLE_ARGS)


class Version(Base):
    """A version of a model: numbered per model, with a lifecycle and free metadata."""

    __tablename__ = "versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"))
    number: Mapped[int]
    #: draft, validating, ready, rejected or archived (by retention: files no longer kept).
    status: Mapped[str] = mapped_column(sa.String(16), default="draft")
    description: Mapped[str] = mapped_column(sa.Text, default="")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONDoc, default=dict)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    #: Problems found when the version was rejected.
    problems: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDoc)
    #: sha256 of the canonical manifest, set when the version becomes ready.
    digest: Mapped[str | None] = mapped_column(sa.String(71))
    #: The files (as the API lists them) of a version that retention archived: its file
    #: rows are gone, so that garbage collection frees their blobs.
    archived_files: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDoc)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    finalized_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    created_by: Mapped[str | None] = mapped_column(sa.String(ACTOR_LENGTH))
    updated_by: Mapped[str | None] = mapped_column(sa.String(ACTOR_LENGTH))

    model: Mapped[Model] = relationship(lazy="joined", innerjoin=True)
    tags: Mapped[list[VersionTag]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="VersionTag.key"
    )
    aliases: Mapped[list[Alias]] = relationship(
        viewonly=True, order_by="Alias.name", overlaps="aliases"
    )

    __table_args__ = (
        # The last guard against duplicate numbers; the counter on the model is the first.
        sa.UniqueConstraint("model_id", "number", name="uq_versions_model_id_number"),
        sa.Index("ix_versions_model_id_created_at", "model_id", "created_at", "id"),
        sa.Index("ix_versions_model_id_updated_at", "model_id", "updated_at", "id"),
        sa.Index("ix_versions_model_id_status", "model_id", "status"),
        sa.Index("ix_versions_digest", "digest"),
        TABLE_ARGS,
    )


class VersionTag(Base):
    """A key/value tag on a version."""

    __tablename__ = "version_tags"

    version_id: Mapped[int] = mapped_column(
        sa.ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(sa.String(TAG_KEY_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(TAG_VALUE_LENGTH), default="")

    __table_args__ = (sa.Index("ix_version_tags_key_value", "key", "value"), TABLE_ARGS)


class Alias(Base):
    """A named pointer from a model to one of its ready versions (``fraud-detector@champion``)."""

    __tablename__ = "aliases"

    model_id: Mapped[int] = mapped_column(
        sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), primary_key=True)
    version_id: Mapped[int] = mapped_column(sa.ForeignKey("versions.id", ondelete="CASCADE"))
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(sa.String(ACTOR_LENGTH))

    model: Mapped[Model] = relationship(overlaps="aliases")
    version: Mapped[Version] = relationship(lazy="joined", innerjoin=True, overlaps="aliases")

    __table_args__ = (
        sa.Index("ix_aliases_version_id", "version_id"),
        # A page of models reads its aliases from this index alone (migration 0007).
        sa.Index("ix_aliases_model_id_name_version_id", "model_id", "name", "version_id"),
        sa.Index("ix_aliases_name", "name"),
        TABLE_ARGS,
    )


class AliasHistory(Base):
    """One move of an alias: who moved it, from which version number to which, when."""

    __tablename__ = "alias_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))
    #: Version numbers, not ids: the history outlives deleted versions.
    from_version: Mapped[int | None]
    to_version: Mapped[int | None]
    actor: Mapped[str | None] = mapped_column(sa.String(ACTOR_LENGTH))
    at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (sa.Index("ix_alias_history_model_id_alias", "model_id", "alias", "id"),
                      TABLE_ARGS)
