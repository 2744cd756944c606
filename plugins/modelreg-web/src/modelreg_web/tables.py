"""The plugin's one table, on its own metadata (never the core's): sign-in sessions."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

#: A browser's session: the API token it signed in with, sealed with a key only the
#: session cookie holds (see :mod:`modelreg_web.sessions`).
web_sessions = sa.Table(
    "web_sessions", metadata,
    # sha256 (hex) of the cookie's session id: the cookie itself is never stored.
    sa.Column("id", sa.String(64), primary_key=True),
    # the token, XOR a keystream of the cookie's key (hex); useless without the cookie.
    sa.Column("sealed_token", sa.String(400), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("principal", sa.String(200), nullable=False),
    sa.Column("token_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False, index=True),
)
