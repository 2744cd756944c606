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
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from ..api import Problem, hookimpl


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
    pattern = settings.get("modelreg.policy.model_name_pattern")
    if pattern and not _pattern(pattern).fullmatch(model["name"]):
        problems.append(Problem(
            "name_pattern",
            f"model name {model['name']!r} does not match the required pattern {pattern!r}",
            "name",
        ))
    for key in _words(settings, "modelreg.policy.required_model_tags"):
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
    for key in _words(settings, "modelreg.policy.required_metadata"):
        if not _has_path(version["metadata"], key):
            problems.append(Problem("missing_metadata",
                                    f"versions must carry the metadata key {key!r}",
                                    f"metadata.{key}"))
    for key in _words(settings, "modelreg.policy.required_version_tags"):
        if key not in version["tags"]:
            problems.append(Problem("missing_tag", f"versions must carry the tag {key!r}",
                                    f"tags.{key}"))
    return problems
