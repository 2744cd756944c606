"""Security: principals, API tokens, per-model grants, the security policy, the audit API.

Settings:

``modelreg.auth.anonymous`` (``none``, the default, ``read`` or ``write``)
    What callers without credentials may do.  ``read``: read every model.  ``write``: every
    operation on models (create, change, rename, delete) — an open registry, as on a
    developer's machine; never the admin API or the audit log.
``modelreg.auth.allow_anonymous_write`` (default ``true``)
    ``false`` makes start-up fail if ``modelreg.auth.anonymous = write``: production.ini sets
    it so that no setting (nor ``MODELREG_AUTH_ANONYMOUS``) can open a production registry.
``modelreg.auth.max_failures`` (default 10), ``...failure_window``,
``...block_seconds`` (seconds, default 60 each)
    Throttling of failed authentication (:mod:`.throttle`): that many failures of a client
    within the window block its requests with credentials for ``block_seconds``; 0
    failures switches throttling off.
``modelreg.allowed_hosts``
    The ``Host`` allow-list (:mod:`.http`).

:func:`includeme` installs the policy (:mod:`.policy`), makes ``modelreg.denied`` the default
permission (a view declared without a permission is refused), gives every route the
:class:`~.policy.ModelContext` of the model it names, renders refusals as 401/403/404, adds
the tween of :mod:`.http` (``Host`` allow-list, ``nosniff``) and the admin API
(:mod:`.views`).
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.settings import asbool

from ..settings import AUTH_ALLOW_ANONYMOUS_WRITE, AUTH_ANONYMOUS
from .access import Level
from .policy import DENIED, POLICY_KEY, SecurityPolicy, forbidden_view, root_factory
from .throttle import Throttle

ANONYMOUS_SETTING = AUTH_ANONYMOUS
ALLOW_ANONYMOUS_WRITE_SETTING = AUTH_ALLOW_ANONYMOUS_WRITE

#: What each value of ``modelreg.auth.anonymous`` gives on every model: ``write`` opens
#: every model-level operation, deleting and renaming included.
ANONYMOUS_LEVELS = {"none": Level.NONE, "read": Level.READ, "write": Level.ADMIN}


def anonymous_level(settings: dict[str, Any]) -> Level:
    """The level of anonymous callers from the settings.

    :raises RuntimeError: for an unknown value, or for ``write`` while
        ``modelreg.auth.allow_anonymous_write`` is false.
    """
    value = str(settings.get(ANONYMOUS_SETTING) or "none").strip().lower()
    if value not in ANONYMOUS_LEVELS:
        raise RuntimeError(
            f"{ANONYMOUS_SETTING} = {value!r} is not one of: {', '.join(ANONYMOUS_LEVELS)}"
        )
    level = ANONYMOUS_LEVELS[value]
    if level >= Level.WRITE and not asbool(settings.get(ALLOW_ANONYMOUS_WRITE_SETTING, True)):
        raise RuntimeError(
            f"refusing to start: {ANONYMOUS_SETTING} = {value} would let anyone change the "
            f"registry, and {ALLOW_ANONYMOUS_WRITE_SETTING} is false (as in production.ini); "
            f"set {ANONYMOUS_SETTING} = none or read and give writers API tokens"
        )
    return level


def includeme(config: Configurator) -> None:
    """Install the security policy, the default permission and the admin API."""
    settings = config.get_settings()
    # pyramid_tm would ask the policy who the caller is (to annotate the transaction) above
    # the exception views, where a database error while checking a token is no JSON error.
    settings.setdefault("tm.annotate_user", "false")
    policy = SecurityPolicy(anonymous_level(settings), Throttle.from_settings(settings))
    config.registry[POLICY_KEY] = policy
    config.set_security_policy(policy)
    config.set_default_permission(DENIED)
    config.set_root_factory(root_factory)
    config.add_forbidden_view(forbidden_view)
    config.include(".http")
    config.include(".views")
