"""``request.registry_service``: what the registry package adds to every request
(registered by :func:`modelreg.registry.includeme`, whichever package's views use it)."""

from __future__ import annotations

from pyramid.request import Request

from .. import keys
from ..security.http import client_address
from .services import RegistryService


def registry_service(request: Request) -> RegistryService:
    """The request's :class:`RegistryService` (``request.registry_service``)."""
    return RegistryService(
        request.dbsession,
        request.registry[keys.PLUGIN_MANAGER].hook,
        request.registry.settings,
        actor=request.authenticated_userid,
        client_addr=client_address(request),
        token_id=getattr(request.identity, "token_id", None),
    )
