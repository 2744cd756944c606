"""The core's tables.  Import from here; the submodules group them by domain."""

from .events import AuditEvent, OutboxEvent
from .files import Blob, BlobHold, File, UploadPart, UploadSession
from .jobs import Job, ScanFinding, WorkerBeat
from .meta import Base, isotime, parse_timestamp, utcnow
from .registry import Alias, AliasHistory, Model, ModelTag, Version, VersionTag
from .security import ApiToken, AuthFailure, Grant, Group, GroupMember, Principal

__all__ = [
    "Alias",
    "AliasHistory",
    "ApiToken",
    "AuditEvent",
    "AuthFailure",
    "Base",
    "Blob",
    "BlobHold",
    "File",
    "Grant",
    "Group",
    "GroupMember",
    "Job",
    "Model",
    "ModelTag",
    "OutboxEvent",
    "Principal",
    "ScanFinding",
    "UploadPart",
    "UploadSession",
    "Version",
    "VersionTag",
    "WorkerBeat",
    "isotime",
    "parse_timestamp",
    "utcnow",
]
