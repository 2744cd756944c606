"""The core's tables.  Import from here; the submodules group them by domain."""

from .events import AuditEvent, OutboxEvent
from .meta import Base, utcnow
from .registry import Alias, AliasHistory, Model, ModelTag, Version, VersionTag

__all__ = [
    "Alias",
    "AliasHistory",
    "AuditEvent",
    "Base",
    "Model",
    "ModelTag",
    "OutboxEvent",
    "Version",
    "VersionTag",
    "utcnow",
]
