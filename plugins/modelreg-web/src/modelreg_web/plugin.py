"""The hook implementations of modelreg-web (the ``web`` entry point)."""

from __future__ import annotations

from typing import Any

from modelreg.api import TokenCredentials, hookimpl

from . import sessions


@hookimpl
def modelreg_migration_locations() -> str:
    """The Alembic branch ``modelreg_web``: the table of sign-in sessions."""
    return "modelreg_web:migrations"


@hookimpl
def modelreg_pyramid_configure(config: Any) -> None:
    """The pages: ``/`` for browsers and everything under ``/ui/``."""
    config.include("modelreg_web.views")


@hookimpl
def modelreg_authenticate(request: Any) -> TokenCredentials | None:
    """On the UI's paths only, the token of the browser's session: the caller is then
    that token's identity (its scopes, expiry and revocation applied by the core)."""
    session = sessions.current(request)
    return TokenCredentials(session.token) if session is not None else None
