"""Administration of principals, groups, tokens and grants; reading the audit log.

Used by the admin REST API and by the ``modelreg users|groups|tokens|grants|audit`` commands
alike, through a session joined to a transaction manager (never committed here).  Every change
is written to the audit log in the same transaction.  Security changes are not sent to the
event outbox: that carries registry events for plugins (webhooks) to react to.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import paging
from ..errors import BadRequest, Conflict, NotFound, Unprocessable
from ..models import (
    ApiToken,
    AuditEvent,
    Grant,
    Group,
    GroupMember,
    Principal,
    isotime,
    parse_timestamp,
    utcnow,
)
from ..names import parse_number
from .access import Level, format_scopes, normalize_pattern, parse_scopes
from .tokens import new_token

#: Longest principal or group name.
PRINCIPAL_NAME_MAX = 64
#: Principal and group names: lower-case slugs (no ':', so ``group:<name>`` and ``cli:<user>``
#: can never be mistaken for a principal).
_PRINCIPAL_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?")
#: The most days a token may live.
MAX_TOKEN_DAYS = 3650
#: Prefix that names a group where a grant's subject may be a principal or a group.
GROUP_PREFIX = "group:"
#: The target types of the audit events written here (the rest are the registry's).
SECURITY_TARGET_TYPES = ("principal", "group", "token", "grant")


def check_principal_name(name: str, what: str = "principal") -> str:
    """Return ``name`` if it is a valid principal or group name, else raise 422."""
    if len(name) > PRINCIPAL_NAME_MAX or not _PRINCIPAL_NAME.fullmatch(name) or ".." in name:
        raise Unprocessable(
            f"invalid {what} name {name!r}: use 1 to {PRINCIPAL_NAME_MAX} lower-case ASCII "
            "letters, digits, '.', '_' and '-', starting and ending with a letter or digit",
            code="invalid_name",
            details={"field": "name"},
        )
    return name


def parse_time(value: str | None, field: str) -> dt.datetime | None:
    """Parse an ISO-8601 timestamp (``Z`` or an offset; none means UTC) to naive UTC; 400 if
    it is not one."""
    if value is None or value == "":
        return None
    parsed = parse_timestamp(value)
    if parsed is None:
        raise BadRequest(
            f"invalid {field} {value[:100]!r}: expected ISO-8601 such as 2026-01-01T12:00:00Z",
            code="invalid_timestamp",
            details={"field": field},
        )
    return parsed


class SecurityService:
    """Principals, groups, tokens, grants and the audit log, for one transaction.

    :param dbsession: a session joined to the current transaction.
    :param actor: who is acting (a principal's name, or ``cli:<os user>``), for the audit log.
    :param token_id: the public id of the token the actor used, if any.
    :param client_addr: the client's address, if any.
    """

    def __init__(
        self,
        dbsession: Session,
        *,
        actor: str | None,
        token_id: str | None = None,
        client_addr: str | None = None,
    ) -> None:
        self.db = dbsession
        self.actor = actor
        self.token_id = token_id
        self.client_addr = client_addr

    def record(
        self,
        action: str,
        target_type: str,
        target: str,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Write the audit event of one change."""
        self.db.add(
            AuditEvent(
                at=utcnow(),
                actor=self.actor,
                token_id=self.token_id,
                action=action,
                target_type=target_type,
                target=target,
                before=before,
                after=after,
                client_addr=self.client_addr,
            )
        )

    def _flush(self, conflict: Conflict) -> None:
        # Two requests may pass an existence check at once; the unique index decides.
        try:
            self.db.flush()
        except IntegrityError as exc:
            raise conflict from exc

    def _page(
        self,
        query: Any,
        order: paging.Order,
        query_id: str,
        page_size: str | int | None,
        page_token: str | None,
    ) -> tuple[list[Any], str | None]:
        size = paging.parse_page_size(None if page_size is None else str(page_size))
        key = paging.decode_token(page_token, query_id, order)
        if key is not None:
            query = query.where(order.after(key))
        rows = self.db.scalars(query.order_by(*order.clauses()).limit(size + 1)).all()
        page, more = list(rows[:size]), len(rows) > size
        token = None
        if more:
            last = page[-1]
            token = paging.encode_token(
                [getattr(last, order.column.key), getattr(last, order.tiebreak.key)], query_id
            )
        return page, token

    # -------------------------------------------------------------------- principals

    def principal_json(self, principal: Principal) -> dict[str, Any]:
        """The API representation of ``principal``."""
        groups = self.db.scalars(
            sa.select(Group.name)
            .join(GroupMember, GroupMember.group_id == Group.id)
            .where(GroupMember.principal_id == principal.id)
            .order_by(Group.name)
        ).all()
        return {
            "name": principal.name,
            "kind": principal.kind,
            "is_admin": principal.is_admin,
            "disabled": principal.disabled,
            "groups": list(groups),
            "created_at": isotime(principal.created_at),
        }

    def get_principal(self, name: str) -> Principal:
        """The principal called ``name``, or 404."""
        principal = self.db.scalar(sa.select(Principal).where(Principal.name == name))
        if principal is None:
            raise NotFound(f"principal {name!r} does not exist", code="principal_not_found",
                           details={"principal": name})
        return principal

    def create_principal(
        self, name: str, *, kind: str = "user", is_admin: bool = False
    ) -> Principal:
        """Create a principal (``kind`` is ``user`` or ``service``); 409 if the name is taken."""
        check_principal_name(name)
        if kind not in ("user", "service"):
            raise Unprocessable(f"invalid kind {kind!r}: use user or service",
                                code="invalid_kind", details={"field": "kind"})
        conflict = Conflict(f"principal {name!r} already exists", code="principal_exists",
                            details={"principal": name})
        if self.db.scalar(sa.select(Principal.id).where(Principal.name == name)) is not None:
            raise conflict
        principal = Principal(name=name, kind=kind, is_admin=is_admin, disabled=False,
                              created_at=utcnow())
        self.db.add(principal)
        self._flush(conflict)
        self.record("principal.created", "principal", name,
                    after={"kind": kind, "is_admin": is_admin})
        return principal

    def update_principal(
        self, name: str, *, disabled: bool | None = None, is_admin: bool | None = None
    ) -> Principal:
        """Disable or enable a principal, or change whether it is a global admin."""
        principal = self.get_principal(name)
        before = {"disabled": principal.disabled, "is_admin": principal.is_admin}
        if disabled is not None:
            principal.disabled = disabled
        if is_admin is not None:
            principal.is_admin = is_admin
        after = {"disabled": principal.disabled, "is_admin": principal.is_admin}
        if after != before:
            action = "principal.updated"
            if after["disabled"] != before["disabled"]:
                action = "principal.disabled" if principal.disabled else "principal.enabled"
            self.record(action, "principal", name, before=before, after=after)
        return principal

    def list_principals(
        self, *, page_size: str | int | None = None, page_token: str | None = None
    ) -> tuple[list[Principal], str | None]:
        """A page of principals by name, and the next page's token."""
        order = paging.Order("name", Principal.name, False, Principal.id)
        return self._page(sa.select(Principal), order, paging.fingerprint("principals"),
                          page_size, page_token)

    # ------------------------------------------------------------------------ groups

    def group_json(self, group: Group) -> dict[str, Any]:
        """The API representation of ``group``."""
        return {
            "name": group.name,
            "members": [member.name for member in group.members],
            "created_at": isotime(group.created_at),
        }

    def get_group(self, name: str) -> Group:
        """The group called ``name``, or 404."""
        group = self.db.scalar(sa.select(Group).where(Group.name == name))
        if group is None:
            raise NotFound(f"group {name!r} does not exist", code="group_not_found",
                           details={"group": name})
        return group

    def create_group(self, name: str) -> Group:
        """Create a group; 409 if the name is taken."""
        check_principal_name(name, "group")
        conflict = Conflict(f"group {name!r} already exists", code="group_exists",
                            details={"group": name})
        if self.db.scalar(sa.select(Group.id).where(Group.name == name)) is not None:
            raise conflict
        group = Group(name=name, created_at=utcnow())
        self.db.add(group)
        self._flush(conflict)
        self.record("group.created", "group", name)
        return group

    def list_groups(
        self, *, page_size: str | int | None = None, page_token: str | None = None
    ) -> tuple[list[Group], str | None]:
        """A page of groups by name, and the next page's token."""
        order = paging.Order("name", Group.name, False, Group.id)
        return self._page(sa.select(Group), order, paging.fingerprint("groups"),
                          page_size, page_token)

    def add_member(self, group_name: str, principal_name: str) -> tuple[Group, bool]:
        """Add a principal to a group; returns the group and whether it was added."""
        group = self.get_group(group_name)
        principal = self.get_principal(principal_name)
        if self.db.get(GroupMember, (group.id, principal.id)) is not None:
            return group, False
        self.db.add(GroupMember(group_id=group.id, principal_id=principal.id))
        self._flush(Conflict(f"{principal_name!r} was just added to {group_name!r}",
                             code="member_exists"))
        self.db.expire(group, ["members"])
        self.record("group.member_added", "group", group.name,
                    after={"member": principal.name})
        return group, True

    def remove_member(self, group_name: str, principal_name: str) -> None:
        """Remove a principal from a group; 404 if it is not a member."""
        group = self.get_group(group_name)
        principal = self.get_principal(principal_name)
        member = self.db.get(GroupMember, (group.id, principal.id))
        if member is None:
            raise NotFound(f"{principal_name!r} is not a member of group {group_name!r}",
                           code="member_not_found",
                           details={"group": group_name, "principal": principal_name})
        self.db.delete(member)
        self.db.flush()
        self.db.expire(group, ["members"])
        self.record("group.member_removed", "group", group.name,
                    before={"member": principal.name})

    # ------------------------------------------------------------------------ tokens

    def token_json(self, token: ApiToken) -> dict[str, Any]:
        """The API representation of ``token``: never its secret, which is not stored."""
        return {
            "id": token.public_id,
            "principal": token.principal.name,
            "scopes": token.scopes.split(),
            "description": token.description,
            "created_at": isotime(token.created_at),
            "expires_at": isotime(token.expires_at),
            "revoked_at": isotime(token.revoked_at),
            "last_used_at": isotime(token.last_used_at),
        }

    def get_token(self, public_id: str) -> ApiToken:
        """The token of that public id, or 404."""
        token = self.db.scalar(sa.select(ApiToken).where(ApiToken.public_id == public_id))
        if token is None:
            raise NotFound(f"API token {public_id!r} does not exist", code="token_not_found",
                           details={"token": public_id})
        return token

    def create_token(
        self,
        principal_name: str,
        *,
        scopes: list[str] | tuple[str, ...] = ("read",),
        expires_in_days: int | None = None,
        description: str = "",
    ) -> tuple[ApiToken, str]:
        """Create a token for a principal; returns its row and the token, the only time the
        token exists in the clear.

        :param scopes: e.g. ``["read"]``, ``["write:fraud-*", "read"]``.
        :param expires_in_days: lifetime in days (1 to 3650); ``None`` for no expiry.
        """
        principal = self.get_principal(principal_name)
        if principal.disabled:
            raise Conflict(f"principal {principal_name!r} is disabled",
                           code="principal_disabled", details={"principal": principal_name})
        parsed = parse_scopes(scopes)
        now = utcnow()
        expires_at = None
        if expires_in_days is not None:
            if not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
                raise Unprocessable(
                    f"expires_in_days must be from 1 to {MAX_TOKEN_DAYS}",
                    code="invalid_expiry", details={"field": "expires_in_days"},
                )
            expires_at = now + dt.timedelta(days=expires_in_days)
        made = new_token()
        token = ApiToken(
            public_id=made.public_id,
            principal=principal,
            principal_id=principal.id,
            secret_hash=made.secret_hash,
            scopes=format_scopes(parsed),
            description=description,
            created_at=now,
            expires_at=expires_at,
        )
        self.db.add(token)
        self._flush(Conflict("token id collision; try again", code="token_exists"))
        self.record("token.created", "token", made.public_id,
                    after={"principal": principal.name, "scopes": token.scopes,
                           "expires_at": isotime(expires_at)})
        return token, made.token

    def list_tokens(
        self,
        *,
        principal: str | None = None,
        page_size: str | int | None = None,
        page_token: str | None = None,
    ) -> tuple[list[ApiToken], str | None]:
        """A page of tokens (of one principal, if named), oldest first."""
        query = sa.select(ApiToken)
        if principal is not None:
            query = query.where(ApiToken.principal_id == self.get_principal(principal).id)
        order = paging.Order("id", ApiToken.id, False, ApiToken.id)
        return self._page(query, order, paging.fingerprint("tokens", principal),
                          page_size, page_token)

    def revoke_token(self, public_id: str) -> ApiToken:
        """Revoke a token for good (revoking it again changes nothing)."""
        token = self.get_token(public_id)
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            self.record("token.revoked", "token", public_id,
                        after={"principal": token.principal.name})
        return token

    # ------------------------------------------------------------------------ grants

    def grant_json(self, grant: Grant) -> dict[str, Any]:
        """The API representation of ``grant``."""
        return {
            "id": grant.id,
            "principal": grant.principal.name if grant.principal is not None else None,
            "group": grant.group.name if grant.group is not None else None,
            "pattern": grant.pattern,
            "level": grant.level,
            "created_at": isotime(grant.created_at),
        }

    def _subject(self, principal: str | None, group: str | None) -> tuple[Principal | None,
                                                                          Group | None]:
        if (principal is None) == (group is None):
            raise Unprocessable("a grant names either a principal or a group",
                                code="invalid_subject", details={"field": "principal"})
        if principal is not None:
            return self.get_principal(principal), None
        return None, self.get_group(group or "")

    def create_grant(
        self, *, pattern: str, level: str, principal: str | None = None,
        group: str | None = None,
    ) -> Grant:
        """Grant ``level`` on the models ``pattern`` matches to a principal or a group."""
        who, team = self._subject(principal, group)
        try:
            parsed = Level.parse(level)
        except ValueError as exc:
            raise Unprocessable(str(exc), code="invalid_level",
                                details={"field": "level"}) from None
        normalized = normalize_pattern(pattern)
        subject = who.name if who is not None else GROUP_PREFIX + (team.name if team else "")
        query = sa.select(Grant.id).where(Grant.pattern == normalized)
        query = query.where(Grant.principal_id == who.id if who is not None
                            else Grant.group_id == (team.id if team else None))
        conflict = Conflict(
            f"{subject} already has a grant on {normalized!r}: delete it first",
            code="grant_exists", details={"subject": subject, "pattern": normalized},
        )
        if self.db.scalar(query) is not None:
            raise conflict
        grant = Grant(principal=who, group=team, pattern=normalized, level=parsed.label,
                      created_at=utcnow())
        self.db.add(grant)
        self._flush(conflict)
        self.record("grant.created", "grant", f"{subject}:{normalized}",
                    after={"level": parsed.label})
        return grant

    def get_grant(self, grant_id: int | str) -> Grant:
        """The grant of that id, or 404."""
        number = parse_number(str(grant_id))
        grant = self.db.get(Grant, number) if number is not None else None
        if grant is None:
            raise NotFound(f"grant {grant_id!r} does not exist", code="grant_not_found",
                           details={"grant": str(grant_id)})
        return grant

    def delete_grant(self, grant_id: int | str) -> None:
        """Delete a grant."""
        grant = self.get_grant(grant_id)
        subject = grant.principal.name if grant.principal else GROUP_PREFIX + grant.group.name
        self.db.delete(grant)
        self.record("grant.deleted", "grant", f"{subject}:{grant.pattern}",
                    before={"level": grant.level})

    def list_grants(
        self,
        *,
        principal: str | None = None,
        group: str | None = None,
        page_size: str | int | None = None,
        page_token: str | None = None,
    ) -> tuple[list[Grant], str | None]:
        """A page of grants (of one principal or group, if named), oldest first."""
        query = sa.select(Grant)
        if principal is not None:
            query = query.where(Grant.principal_id == self.get_principal(principal).id)
        if group is not None:
            query = query.where(Grant.group_id == self.get_group(group).id)
        order = paging.Order("id", Grant.id, False, Grant.id)
        return self._page(query, order, paging.fingerprint("grants", principal, group),
                          page_size, page_token)

    # ------------------------------------------------------------------------- audit

    @staticmethod
    def audit_json(event: AuditEvent) -> dict[str, Any]:
        """The API representation of an audit event."""
        return {
            "id": event.id,
            "at": isotime(event.at),
            "actor": event.actor,
            "token_id": event.token_id,
            "action": event.action,
            "target_type": event.target_type,
            "target": event.target,
            "before": event.before,
            "after": event.after,
            "client_addr": event.client_addr,
        }

    def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        target_type: str | None = None,
        model: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page_size: str | int | None = None,
        page_token: str | None = None,
    ) -> tuple[list[AuditEvent], str | None]:
        """A page of audit events, newest first.

        :param actor: only this actor's.
        :param action: only this action (``model.created``).
        :param target: only targets starting with this (``fraud-detector`` finds the model,
            its versions, tags and aliases — and those of ``fraud-detector-2``).
        :param target_type: only targets of this type (``model``, ``version``, ``alias``,
            ``principal``, ``token``...).
        :param model: only the model of exactly this name and its versions, tags, aliases
            and files.
        :param since: only events at or after this ISO-8601 time.
        :param until: only events before this ISO-8601 time.
        """
        for field, value, column in (("actor", actor, AuditEvent.actor),
                                     ("action", action, AuditEvent.action),
                                     ("target", target, AuditEvent.target),
                                     ("target_type", target_type, AuditEvent.target_type),
                                     ("model", model, AuditEvent.target)):
            if value and len(value) > column.type.length:
                # It could match nothing; refused rather than sent to the database (SQLite
                # refuses LIKE patterns past 50,000 characters).
                raise Unprocessable(
                    f"{field} is at most {column.type.length} characters",
                    code="invalid_parameter",
                    details={"field": field, "max_length": column.type.length},
                )
        query = sa.select(AuditEvent)
        if actor:
            query = query.where(AuditEvent.actor == actor)
        if action:
            query = query.where(AuditEvent.action == action)
        if target:
            query = query.where(AuditEvent.target.startswith(target, autoescape=True))
        if target_type:
            query = query.where(AuditEvent.target_type == target_type)
        if model:
            # Targets of a model's parts are "<model>/<n>", "<model>:<tag>", "<model>@<alias>"
            # (names hold none of "/:@"); security targets never are.
            parts = sa.or_(*(AuditEvent.target.startswith(model + sep, autoescape=True)
                             for sep in "/:@"))
            if any(sep in model for sep in "/:@"):
                parts = sa.false()  # no model is called so
            query = query.where(
                AuditEvent.target_type.not_in(SECURITY_TARGET_TYPES),
                sa.or_(
                    sa.and_(AuditEvent.target_type == "model", AuditEvent.target == model),
                    sa.and_(AuditEvent.target_type != "model", parts),
                ),
            )
        start, end = parse_time(since, "since"), parse_time(until, "until")
        if start is not None:
            query = query.where(AuditEvent.at >= start)
        if end is not None:
            query = query.where(AuditEvent.at < end)
        order = paging.Order("id", AuditEvent.id, True, AuditEvent.id)
        query_id = paging.fingerprint("audit", actor, action, target, target_type, model,
                                      since, until)
        return self._page(query, order, query_id, page_size, page_token)
