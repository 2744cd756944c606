"""Request and response bodies of the admin API and the audit log, declared once."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ..models.registry import NAME_LENGTH
from ..openapi import Body
from .services import MAX_TOKEN_DAYS, PRINCIPAL_NAME_MAX

LevelName = Literal["read", "write", "admin"]

# ----------------------------------------------------------------------------- requests


class PrincipalCreate(Body):
    """Body of ``POST /api/v1/admin/principals``."""

    name: str = Field(max_length=PRINCIPAL_NAME_MAX, description="A lower-case slug.")
    kind: Literal["user", "service"] = "user"
    is_admin: bool = Field(False, description="A global admin may do everything.")


class PrincipalUpdate(Body):
    """Body of ``PATCH /api/v1/admin/principals/{principal}``: the fields to change."""

    disabled: bool | None = Field(None, description="A disabled principal's tokens fail.")
    is_admin: bool | None = None


class TokenCreate(Body):
    """Body of ``POST /api/v1/admin/tokens``."""

    principal: str = Field(max_length=PRINCIPAL_NAME_MAX)
    scopes: list[str] = Field(
        default_factory=lambda: ["read"],
        min_length=1,
        max_length=32,
        description="read, write or admin, each optionally ':<model pattern>' (write:fraud-*).",
    )
    expires_in_days: int | None = Field(None, ge=1, le=MAX_TOKEN_DAYS)
    description: str = Field("", max_length=255)


class GroupCreate(Body):
    """Body of ``POST /api/v1/admin/groups``."""

    name: str = Field(max_length=PRINCIPAL_NAME_MAX)


class GrantCreate(Body):
    """Body of ``POST /api/v1/admin/grants``: a level on models, to a principal or a group."""

    principal: str | None = Field(None, max_length=PRINCIPAL_NAME_MAX)
    group: str | None = Field(None, max_length=PRINCIPAL_NAME_MAX)
    pattern: str = Field(max_length=NAME_LENGTH,
                         description="A model name, or a glob with * and ? (fraud-*).")
    level: LevelName

    @model_validator(mode="after")
    def _one_subject(self) -> GrantCreate:
        if (self.principal is None) == (self.group is None):
            raise ValueError("name either a principal or a group")
        return self


# ---------------------------------------------------------------------------- responses


class PrincipalOut(BaseModel):
    """A principal: a user or a service account."""

    name: str
    kind: Literal["user", "service"]
    is_admin: bool
    disabled: bool
    groups: list[str]
    created_at: dt.datetime


class PrincipalList(BaseModel):
    """A page of principals."""

    principals: list[PrincipalOut]
    next_page_token: str | None


class TokenOut(BaseModel):
    """An API token, without its secret (which is not stored)."""

    id: str = Field(description="The public id: the part between 'mr_' and the secret.")
    principal: str
    scopes: list[str]
    description: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


class TokenCreated(TokenOut):
    """A token just created: ``token`` is shown this once and never again."""

    token: str


class TokenList(BaseModel):
    """A page of tokens."""

    tokens: list[TokenOut]
    next_page_token: str | None


class GroupOut(BaseModel):
    """A group of principals."""

    name: str
    members: list[str]
    created_at: dt.datetime


class GroupList(BaseModel):
    """A page of groups."""

    groups: list[GroupOut]
    next_page_token: str | None


class GrantOut(BaseModel):
    """A grant: a level on the models a pattern matches, to a principal or a group."""

    id: int
    principal: str | None
    group: str | None
    pattern: str
    level: LevelName
    created_at: dt.datetime


class GrantList(BaseModel):
    """A page of grants."""

    grants: list[GrantOut]
    next_page_token: str | None


class AuditEventOut(BaseModel):
    """One change: who (and with which token) did what to which target, when."""

    id: int
    at: dt.datetime
    actor: str | None
    token_id: str | None
    action: str
    target_type: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    client_addr: str | None


class AuditList(BaseModel):
    """A page of audit events, newest first."""

    events: list[AuditEventOut]
    next_page_token: str | None


class GrantHeld(BaseModel):
    """A grant the caller holds, directly or through a group."""

    pattern: str
    level: LevelName


class WhoAmI(BaseModel):
    """Who the caller is, as the registry sees the request's credentials."""

    principal: str | None = Field(description="The principal's name; null when anonymous.")
    is_admin: bool = Field(description="A global admin may do everything.")
    token: str | None = Field(description="The public id of the token used, if any.")
    scopes: list[str] | None = Field(
        description="The token's scopes (read, write or admin, optionally ':<pattern>'); null "
        "when the identity came from a plugin rather than a token.")
    grants: list[GrantHeld] = Field(description="Grants held, directly or through groups.")
    anonymous: Literal["none", "read", "write", "admin"] = Field(
        description="What anyone may do without credentials (modelreg.auth.anonymous).")

