"""API tokens: ``mr_<public id>_<secret>``, made here, checked here.

The public id (16 hex digits) finds the row; the secret (``secrets.token_urlsafe(32)``, 256
random bits) is stored only as its sha256 and compared with :func:`hmac.compare_digest`.  A
plain hash is right for a secret of that entropy: nothing can be guessed, and a slow hash
would cost every request.  A token that is unknown, wrong, revoked, expired, or whose
principal is disabled is refused with 401 at once; there is no fallback to anonymous access.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..db import plain_rows
from ..errors import Unauthorized
from ..models import ApiToken, AuthFailure, Grant, GroupMember, Principal
from .access import Identity, Level, Scope, parse_scopes

#: Every token starts with this, so that secret scanners and people recognise it.
TOKEN_PREFIX = "mr_"  # noqa: S105 - a prefix, not a secret
_PUBLIC_ID = re.compile(r"[0-9a-f]{16}")
#: Longest secret accepted (``token_urlsafe(32)`` makes 43 characters).
_MAX_SECRET = 256
#: Compared against when the public id is unknown, so that both paths do the same work.
_NO_HASH = "0" * 64


@dataclass(frozen=True)
class NewToken:
    """A token just made: its public id, the whole token (shown once) and the stored hash."""

    public_id: str
    token: str
    secret_hash: str


def hash_secret(secret: str) -> str:
    """The stored form of a secret: sha256, hex."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_token() -> NewToken:
    """Make a token from fresh randomness."""
    public_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewToken(public_id, f"{TOKEN_PREFIX}{public_id}_{secret}", hash_secret(secret))


def parse_token(token: str) -> tuple[str, str] | None:
    """``(public id, secret)`` of a well-formed token, else ``None``."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    public_id, sep, secret = token[len(TOKEN_PREFIX):].partition("_")
    if not sep or not _PUBLIC_ID.fullmatch(public_id) or not 0 < len(secret) <= _MAX_SECRET:
        return None
    return public_id, secret


def _refused(message: str, code: str = "invalid_token") -> Unauthorized:
    return Unauthorized(message, code=code, error="invalid_token")


def load_grants(db: Session, principal_id: int) -> tuple[tuple[str, Level], ...]:
    """``(pattern, level)`` of the grants to a principal and to the groups it belongs to."""
    groups = sa.select(GroupMember.group_id).where(GroupMember.principal_id == principal_id)
    rows = db.execute(
        sa.select(Grant.pattern, Grant.level)
        .where(sa.or_(Grant.principal_id == principal_id, Grant.group_id.in_(groups)))
        .order_by(Grant.id)
    ).all()
    return tuple((pattern, Level.parse(level)) for pattern, level in rows)


def principal_identity(
    db: Session,
    principal: Principal,
    scopes: tuple[Scope, ...] | None = None,
    token_id: str | None = None,
) -> Identity:
    """The :class:`Identity` of an enabled principal, with its grants loaded.

    :param scopes: the scopes of the token used (``None``: not capped).
    :param token_id: the public id of the token used.
    """
    return Identity(
        principal_id=principal.id,
        name=principal.name,
        is_admin=principal.is_admin,
        grants=load_grants(db, principal.id),
        scopes=scopes,
        token_id=token_id,
    )


@dataclass(frozen=True)
class TokenUse:
    """The token a request authenticated with: its row id, public id and last use (for
    :meth:`~modelreg.security.policy.SecurityPolicy` to stamp ``last_used_at``)."""

    id: int
    public_id: str
    last_used_at: dt.datetime | None


#: What :func:`authenticate_token` passes to ``check_client`` when it did not read the
#: client's block with the token (no such token): the callee reads it itself.
BLOCK_NOT_READ: Any = type("BlockNotRead", (), {"__repr__": lambda self: "BLOCK_NOT_READ"})()


@functools.cache
def _token_statement(with_client: bool) -> Any:
    """One statement for everything a bearer token's check needs (parameter ``public_id``):
    the token, its principal, one row per grant of the principal and of its groups (or one
    row with ``pattern`` NULL when it has none) and, with ``with_client``, the block of
    the client (parameter ``client``) from ``auth_failures``.  Built once: it replaces the
    three statements (token with principal, grants, the client's block) each bearer request
    cost before."""
    groups = (sa.select(GroupMember.group_id)
              .where(GroupMember.principal_id == Principal.id).correlate(Principal))
    columns: list[Any] = [
        ApiToken.id, ApiToken.public_id, ApiToken.secret_hash, ApiToken.scopes,
        ApiToken.expires_at, ApiToken.revoked_at, ApiToken.last_used_at,
        Principal.id.label("principal_id"), Principal.name.label("principal_name"),
        Principal.is_admin, Principal.disabled, Grant.pattern, Grant.level,
    ]
    if with_client:
        columns.append(
            sa.select(AuthFailure.blocked_until)
            .where(AuthFailure.client == sa.bindparam("client"))
            .scalar_subquery().label("blocked_until"))
    return (
        sa.select(*columns)
        .select_from(ApiToken)
        .join(Principal, Principal.id == ApiToken.principal_id)
        .outerjoin(Grant, sa.or_(Grant.principal_id == Principal.id,
                                 Grant.group_id.in_(groups)))
        .where(ApiToken.public_id == sa.bindparam("public_id"))
        .order_by(Grant.id)
    )


def authenticate_token(
    db: Session,
    token: str,
    now: dt.datetime,
    *,
    client: str | None = None,
    check_client: Callable[[Any], None] | None = None,
) -> tuple[Identity, TokenUse]:
    """The identity a bearer token stands for, and the token's use; :class:`Unauthorized` if
    refused.  One statement (:func:`_token_statement`), on the session's connection
    (:func:`modelreg.db.plain_rows`).

    :param client: the client address whose block (``auth_failures.blocked_until``) is read
        in the same statement.
    :param check_client: called before anything about the token is decided (so that a
        blocked client is refused whatever it sent) with that ``blocked_until`` — ``None``
        when the client is not blocked, :data:`BLOCK_NOT_READ` when the statement found no
        token to read it with (or ``client`` was not given); it raises to refuse.
    """
    parsed = parse_token(token)
    if parsed is None:
        if check_client is not None:
            check_client(BLOCK_NOT_READ)
        raise _refused(
            f"malformed API token: expected {TOKEN_PREFIX}<id>_<secret>", "malformed_token"
        )
    public_id, secret = parsed
    params = {"public_id": public_id}
    if client is not None:
        params["client"] = client
    # Outside a transaction block where the request has none yet (modelreg.db.read_alone):
    # a write after it may then still commit itself in its one round trip.
    rows = plain_rows(db, _token_statement(client is not None), params, flush=False,
                      alone=True)
    row = rows[0] if rows else None
    if check_client is not None:
        check_client(row.blocked_until if row is not None and client is not None
                     else BLOCK_NOT_READ)
    matches = hmac.compare_digest(row.secret_hash if row else _NO_HASH, hash_secret(secret))
    if row is None or not matches:
        raise _refused("invalid API token")
    # Only the holder of the secret learns why a real token is refused.
    if row.revoked_at is not None:
        raise _refused(f"API token {public_id} was revoked", "token_revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise _refused(f"API token {public_id} has expired", "token_expired")
    if row.disabled:
        raise _refused(f"principal {row.principal_name!r} is disabled", "principal_disabled")
    identity = Identity(
        principal_id=row.principal_id,
        name=row.principal_name,
        is_admin=row.is_admin,
        grants=tuple((r.pattern, Level.parse(r.level)) for r in rows if r.pattern is not None),
        scopes=parse_scopes([row.scopes]),
        token_id=row.public_id,
    )
    return identity, TokenUse(row.id, row.public_id, row.last_used_at)


def identity_for_name(db: Session, name: str) -> Identity:
    """The identity of the principal a plugin named (``modelreg_authenticate``); 401 if the
    principal does not exist or is disabled."""
    principal = db.scalar(sa.select(Principal).where(Principal.name == name))
    if principal is None or principal.disabled:
        raise _refused(f"principal {name!r} is unknown or disabled", "unknown_principal")
    return principal_identity(db, principal)
