"""Tables of who may do what: principals, groups, API tokens and per-model grants.

The rules that use them live in :mod:`modelreg.security`; these classes only say how they are
stored.  A token's secret is never stored: only its sha256 (the secret is 256 random bits, so
a plain hash is as good as a slow one and costs nothing per request).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .meta import TABLE_ARGS, Base, Timestamp, utcnow
from .registry import ACTOR_LENGTH, NAME_LENGTH

#: Length of a token's public id (hex) and of a sha256 in hex.
TOKEN_PUBLIC_ID_LENGTH = 16
SHA256_HEX_LENGTH = 64
#: Longest scope string of a token (space-separated scopes).
SCOPES_LENGTH = 1024


class Principal(Base):
    """Someone or something that acts on the registry: a person or a service account."""

    __tablename__ = "principals"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: A lower-case slug; what the audit log and ``created_by`` record as the actor.
    name: Mapped[str] = mapped_column(sa.String(ACTOR_LENGTH), unique=True)
    #: ``user`` or ``service``.
    kind: Mapped[str] = mapped_column(sa.String(16), default="user")
    #: Global administrators may do everything, the admin API included.
    is_admin: Mapped[bool] = mapped_column(default=False)
    #: A disabled principal's tokens are refused.
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (
        sa.CheckConstraint("kind IN ('user', 'service')", name="kind"),
        TABLE_ARGS,
    )


class Group(Base):
    """A team of principals; grants to a group apply to each member."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(ACTOR_LENGTH), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    members: Mapped[list[Principal]] = relationship(
        secondary="group_members", order_by="Principal.name", viewonly=True
    )

    __table_args__ = (TABLE_ARGS,)


class GroupMember(Base):
    """Membership of a principal in a group."""

    __tablename__ = "group_members"

    group_id: Mapped[int] = mapped_column(
        sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    principal_id: Mapped[int] = mapped_column(
        sa.ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True
    )

    __table_args__ = (sa.Index("ix_group_members_principal_id", "principal_id"), TABLE_ARGS)


class ApiToken(Base):
    """A bearer token of a principal: ``mr_<public_id>_<secret>``, shown once at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The token's id everywhere outside this table (listings, revocation, the audit log).
    public_id: Mapped[str] = mapped_column(sa.String(TOKEN_PUBLIC_ID_LENGTH), unique=True)
    principal_id: Mapped[int] = mapped_column(
        sa.ForeignKey("principals.id", ondelete="CASCADE")
    )
    #: sha256 of the secret, hex.
    secret_hash: Mapped[str] = mapped_column(sa.String(SHA256_HEX_LENGTH))
    #: Space-separated scopes, e.g. ``read`` or ``write:fraud-*``.
    scopes: Mapped[str] = mapped_column(sa.String(SCOPES_LENGTH))
    description: Mapped[str] = mapped_column(sa.String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    principal: Mapped[Principal] = relationship(lazy="joined", innerjoin=True)

    __table_args__ = (sa.Index("ix_api_tokens_principal_id", "principal_id"), TABLE_ARGS)


class Grant(Base):
    """A level (``read`` < ``write`` < ``admin``) on the models a name pattern matches.

    The subject is a principal or a group (exactly one).  The pattern is stored normalized
    (like model names): an exact name, or a glob with ``*`` and ``?`` such as ``fraud-*``.
    """

    __tablename__ = "grants"

    id: Mapped[int] = mapped_column(primary_key=True)
    principal_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("principals.id", ondelete="CASCADE")
    )
    group_id: Mapped[int | None] = mapped_column(sa.ForeignKey("groups.id", ondelete="CASCADE"))
    pattern: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))
    #: ``read``, ``write`` or ``admin``.
    level: Mapped[str] = mapped_column(sa.String(8))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    principal: Mapped[Principal | None] = relationship()
    group: Mapped[Group | None] = relationship()

    __table_args__ = (
        sa.CheckConstraint(
            "(principal_id IS NULL AND group_id IS NOT NULL)"
            " OR (principal_id IS NOT NULL AND group_id IS NULL)",
            name="one_subject",
        ),
        sa.CheckConstraint("level IN ('read', 'write', 'admin')", name="level"),
        # NULLs are distinct in unique constraints on every backend, so a group's grants
        # (principal_id NULL) never collide with a principal's, and the other way round.
        sa.UniqueConstraint("principal_id", "pattern", name="uq_grants_principal_id_pattern"),
        sa.UniqueConstraint("group_id", "pattern", name="uq_grants_group_id_pattern"),
        TABLE_ARGS,
    )


class AuthFailure(Base):
    """Failed authentications of one client in the current window, for throttling.

    Kept in the database, not in a process, so that a client is throttled the same whichever
    app process its requests reach.
    """

    __tablename__ = "auth_failures"

    #: The client: its address, ``REMOTE_ADDR`` (see ``modelreg.security.http``).
    client: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    #: Failures since ``window_started_at``.
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    #: Requests with credentials from this client are refused with 429 until then.
    blocked_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    __table_args__ = (TABLE_ARGS,)
