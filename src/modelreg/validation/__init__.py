"""The validation pipeline: every validator runs and all problems are reported together."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import ApiError
from ..policy import policy_rules
from ..types import Problem


def _collect(results: Iterable[Iterable[Problem] | None]) -> list[Problem]:
    problems: list[Problem] = []
    for result in results:
        for problem in result or ():
            if not isinstance(problem, Problem):
                raise ApiError(
                    f"a validation plugin returned {type(problem).__name__}, not a Problem",
                    code="plugin_error",
                    status=500,
                )
            problems.append(problem)
    return problems


def validate_model(
    hook: Any, model: dict[str, Any], previous: dict[str, Any] | None, settings: dict[str, Any]
) -> list[Problem]:
    """Ask every ``modelreg_validate_model`` implementation; return all problems."""
    return _collect(hook.modelreg_validate_model(model=model, previous=previous,
                                                 settings=settings))


def validate_version(
    hook: Any, model: dict[str, Any], version: dict[str, Any], settings: dict[str, Any]
) -> list[Problem]:
    """Ask every ``modelreg_validate_version`` implementation; return all problems."""
    return _collect(hook.modelreg_validate_version(model=model, version=version,
                                                   settings=settings))


def validate_alias(
    hook: Any, model: dict[str, Any], alias: str, version: dict[str, Any],
    previous: dict[str, Any] | None, settings: dict[str, Any],
) -> list[Problem]:
    """Ask every ``modelreg_validate_alias`` implementation; return all problems."""
    return _collect(hook.modelreg_validate_alias(model=model, alias=alias, version=version,
                                                 previous=previous, settings=settings))


#: The module of the core's own validators (:mod:`.builtin`), whatever name it is registered
#: under (its entry point's, or its module name in tests).
BUILTIN = "modelreg.validation.builtin"


def alias_rules(hook: Any, settings: dict[str, Any]) -> bool:
    """Whether anything may refuse an alias's target: a protected alias configured
    (``modelreg.policy.protected_aliases``, checked by the core's own validators) or a plugin
    other than the core implementing ``modelreg_validate_alias``.

    When nothing may, writes that would otherwise read the documents the rules see (setting
    an alias, changing an aliased version's tags) skip those reads and the model's lock that
    keeps them true (:mod:`modelreg.registry.commands`): the rules could not refuse anything.
    """
    for impl in hook.modelreg_validate_alias.get_hookimpls():
        if (getattr(impl.plugin, "__name__", None) != BUILTIN
                or policy_rules(settings).protected_aliases):
            return True
    return False
