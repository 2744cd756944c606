"""The core's own policy validators, registered as a plugin like any other.

Settings (all optional, whitespace-separated lists):

``modelreg.policy.model_name_pattern``
    a regular expression every model name must match in full (e.g. ``[a-z0-9-]+``).
``modelreg.policy.required_model_tags``
    tag keys every model must carry.
``modelreg.policy.required_version_tags``
    tag keys a version must carry to be finalized.
``modelreg.policy.required_metadata``
    metadata keys a version must carry to be finalized (dots address nested keys:
    ``metrics.auc``).
``modelreg.policy.protected_aliases``
    the tags the version a protected alias points at must carry (``production:approved=true``;
    the syntax and the rest of the protection are in :mod:`modelreg.policy`).

The size, quota and retention rules need the database and are applied by the core itself
(:mod:`modelreg.policy`).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from ..api import Problem, hookimpl
from ..policy import policy_rules
from ..settings import (
    POLICY_MODEL_NAME_PATTERN,
    POLICY_REQUIRED_METADATA,
    POLICY_REQUIRED_MODEL_TAGS,
    POLICY_REQUIRED_VERSION_TAGS,
)


def _words(settings: dict[str, Any], key: str) -> list[str]:
    return (settings.get(key) or "").split()


@cache
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def _has_path(document: dict[str, Any], dotted: str) -> bool:
    node: Any = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@hookimpl
def modelreg_validate_model(
    model: dict[str, Any], settings: dict[str, Any]
) -> list[Problem]:
    """Model-name pattern and required model tags."""
    problems = []
    pattern = settings.get(POLICY_MODEL_NAME_PATTERN)
    if pattern and not _pattern(pattern).fullmatch(model["name"]):
        problems.append(Problem(
            "name_pattern",
            f"model name {model['name']!r} does not match the required pattern {pattern!r}",
            "name",
        ))
    for key in _words(settings, POLICY_REQUIRED_MODEL_TAGS):
        if key not in model["tags"]:
            problems.append(Problem("missing_tag", f"models must carry the tag {key!r}",
                                    f"tags.{key}"))
    return problems


@hookimpl
def modelreg_validate_version(
    version: dict[str, Any], settings: dict[str, Any]
) -> list[Problem]:
    """Required metadata keys and version tags."""
    problems = []
    for key in _words(settings, POLICY_REQUIRED_METADATA):
        if not _has_path(version["metadata"], key):
            problems.append(Problem("missing_metadata",
                                    f"versions must carry the metadata key {key!r}",
                                    f"metadata.{key}"))
    for key in _words(settings, POLICY_REQUIRED_VERSION_TAGS):
        if key not in version["tags"]:
            problems.append(Problem("missing_tag", f"versions must carry the tag {key!r}",
                                    f"tags.{key}"))
    return problems


@hookimpl
def modelreg_validate_alias(
    alias: str, version: dict[str, Any], settings: dict[str, Any]
) -> list[Problem]:
    """The tags the target of a protected alias must carry, all missing ones together."""
    requirements = policy_rules(settings).protected_aliases.get(alias, ())
    return [
        Problem(
            "protected_alias_tag",
            f"alias {alias!r} is protected: it may only point at a version carrying the tag "
            f"{str(requirement)!r}, which version {version['number']} "
            + ("does not carry" if requirement.key not in version["tags"] else
               f"carries with the value {version['tags'][requirement.key]!r}"),
            f"tags.{requirement.key}",
        )
        for requirement in requirements
        if not requirement.met_by(version["tags"])
    ]
