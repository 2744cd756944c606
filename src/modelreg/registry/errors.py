"""The registry's public errors: answers other packages (security) give about models."""

from __future__ import annotations

from ..errors import NotFound


def model_not_found(name: str) -> NotFound:
    """The answer for a model that does not exist, or that the caller may not know of."""
    return NotFound(
        f"model {name!r} does not exist", code="model_not_found", details={"model": name}
    )
