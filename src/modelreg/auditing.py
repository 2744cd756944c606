"""Audit events written by plugins (:func:`modelreg.api.record_audit`,
:func:`modelreg.api.audit_request`).

The core writes its own audit events through its services; a plugin that changes something
an operator must be able to trace (the scan plugin's allowances, for instance) writes them
through these two functions, into the same log that ``GET /api/v1/audit`` and
``modelreg audit`` read.  The table itself stays internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .models import AuditEvent, utcnow
from .models.events import ACTOR_LENGTH
from .security.http import client_address

if TYPE_CHECKING:
    from pyramid.request import Request
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

#: Longest ``action`` and ``target_type`` (the columns' lengths).
ACTION_LENGTH = 64
TARGET_TYPE_LENGTH = 32
TARGET_LENGTH = 512


def _values(action: str, target_type: str, target: str, actor: str | None,
            before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    if not action or len(action) > ACTION_LENGTH:
        raise ValueError(f"an audit action is 1 to {ACTION_LENGTH} characters")
    if not target_type or len(target_type) > TARGET_TYPE_LENGTH:
        raise ValueError(f"an audit target type is 1 to {TARGET_TYPE_LENGTH} characters")
    if actor is not None and len(actor) > ACTOR_LENGTH:
        raise ValueError(f"an audit actor is at most {ACTOR_LENGTH} characters")
    return {"at": utcnow(), "actor": actor, "action": action, "target_type": target_type,
            "target": target[:TARGET_LENGTH], "before": before, "after": after}


def record_audit(
    connection: Connection | Session, *, action: str, target_type: str, target: str,
    actor: str | None, before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Write one audit event in the transaction of ``connection`` (a SQLAlchemy
    ``Connection`` or ``Session``), outside any request: a worker's or a plugin's own.

    :param action: what happened, ``<noun>.<verb>`` (``scan.allowance_used``).
    :param target_type: what it happened to (``scan_allowance``, ``version``); targets of
        type ``version`` named ``<model>/<number>`` are found by ``GET /api/v1/audit?model=``.
    :param target: the target's name (cut to 512 characters).
    :param actor: who acted: a principal's name, or ``system:<component>``.
    :param before: a JSON summary of the target before, if any.
    :param after: a JSON summary of the target after, if any.
    :raises ValueError: when ``action``, ``target_type`` or ``actor`` do not fit the log.
    """
    connection.execute(AuditEvent.__table__.insert().values(
        **_values(action, target_type, target, actor, before, after)))


def audit_request(
    request: Request, action: str, target_type: str, target: str,
    before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
) -> None:
    """Write one audit event in the request's transaction, with the request's actor, API
    token and client address, as the core's own changes record them: it is kept only if the
    request's change commits.  Arguments as :func:`record_audit`'s."""
    values = _values(action, target_type, target, request.authenticated_userid, before, after)
    identity = request.identity
    request.dbsession.add(AuditEvent(
        **values, client_addr=client_address(request),
        token_id=getattr(identity, "token_id", None)))
