"""Typed results of the client: one dataclass per resource of the REST API.

Each is built from the server's JSON with ``from_json``; ``raw`` keeps the whole answer, so
fields a newer server adds are not lost, and :meth:`as_dict` gives plain JSON back (what
``modelreg … --json`` prints).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Alias",
    "AliasMove",
    "FileEntry",
    "FileList",
    "Finding",
    "Model",
    "Problem",
    "PullResult",
    "PushResult",
    "Upload",
    "Version",
]


def _time(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, _Result):
        return value.as_dict()
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class _Result:
    """Shared behaviour of the result classes."""

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (timestamps in ISO 8601), without ``raw``."""
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.name != "raw"
        }


@dataclass(frozen=True)
class Problem(_Result):
    """A rule a model or version breaks (or a finding of a scanner)."""

    code: str
    message: str
    field: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Problem:
        """Build from the server's JSON."""
        return cls(data.get("code", ""), data.get("message", ""), data.get("field"))


@dataclass(frozen=True)
class Model(_Result):
    """A model: its name, description, tags and aliases (alias → version number)."""

    name: str
    description: str
    tags: dict[str, str]
    aliases: dict[str, int]
    latest_version: int | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    created_by: str | None
    updated_by: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        """Build from the server's JSON."""
        return cls(
            name=data["name"],
            description=data.get("description", ""),
            tags=dict(data.get("tags") or {}),
            aliases=dict(data.get("aliases") or {}),
            latest_version=data.get("latest_version"),
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
            created_by=data.get("created_by"),
            updated_by=data.get("updated_by"),
            raw=data,
        )


@dataclass(frozen=True)
class Version(_Result):
    """A version of a model.  ``status`` is ``draft``, ``validating``, ``ready`` or
    ``rejected``; ``digest`` (``sha256:…``) is set once it is ready."""

    model: str
    number: int
    status: str
    description: str
    metadata: dict[str, Any]
    lineage: dict[str, Any]
    tags: dict[str, str]
    aliases: list[str]
    digest: str | None
    problems: list[Problem]
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    finalized_at: dt.datetime | None
    created_by: str | None
    updated_by: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Version:
        """Build from the server's JSON."""
        return cls(
            model=data["model"],
            number=data["number"],
            status=data["status"],
            description=data.get("description", ""),
            metadata=dict(data.get("metadata") or {}),
            lineage=dict(data.get("lineage") or {}),
            tags=dict(data.get("tags") or {}),
            aliases=list(data.get("aliases") or []),
            digest=data.get("digest"),
            problems=[Problem.from_json(p) for p in data.get("problems") or []],
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
            finalized_at=_time(data.get("finalized_at")),
            created_by=data.get("created_by"),
            updated_by=data.get("updated_by"),
            raw=data,
        )

    @property
    def ref(self) -> str:
        """``model/number``, the ref that names exactly this version."""
        return f"{self.model}/{self.number}"


@dataclass(frozen=True)
class Alias(_Result):
    """An alias and the version number it points at."""

    model: str
    alias: str
    version: int
    updated_at: dt.datetime | None
    updated_by: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alias:
        """Build from the server's JSON."""
        return cls(data["model"], data["alias"], data["version"],
                   _time(data.get("updated_at")), data.get("updated_by"))


@dataclass(frozen=True)
class AliasMove(_Result):
    """One move of an alias; ``None`` on one side means created or deleted."""

    alias: str
    from_version: int | None
    to_version: int | None
    actor: str | None
    at: dt.datetime | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AliasMove:
        """Build from the server's JSON."""
        return cls(data["alias"], data.get("from_version"), data.get("to_version"),
                   data.get("actor"), _time(data.get("at")))


@dataclass(frozen=True)
class FileEntry(_Result):
    """A file of a version: relative POSIX path, size, lowercase hex sha256."""

    path: str
    size: int
    sha256: str
    media_type: str = "application/octet-stream"
    created_at: dt.datetime | None = None
    created_by: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileEntry:
        """Build from the server's JSON."""
        return cls(data["path"], data["size"], data["sha256"],
                   data.get("media_type", "application/octet-stream"),
                   _time(data.get("created_at")), data.get("created_by"))


@dataclass(frozen=True)
class FileList(_Result):
    """The files of a version, sorted by path, with the version's digest once ready."""

    model: str
    version: int
    digest: str | None
    files: list[FileEntry]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileList:
        """Build from the server's JSON."""
        return cls(data["model"], data["version"], data.get("digest"),
                   [FileEntry.from_json(f) for f in data.get("files") or []])


@dataclass(frozen=True)
class Part(_Result):
    """A numbered part an upload session holds (``sha256``: lowercase hex)."""

    number: int
    start: int
    size: int
    sha256: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Part:
        """Build from the server's JSON."""
        digest = data.get("digest")
        return cls(data["number"], data.get("start", 0), data["size"],
                   digest.removeprefix("sha256:") if digest else None)


@dataclass(frozen=True)
class Upload(_Result):
    """A resumable upload session: ``offset`` is where the next chunk starts; with
    ``part_size``, the file goes in numbered parts and ``parts`` are those received."""

    id: str
    model: str
    version: int
    path: str
    offset: int
    size: int | None
    digest: str | None
    expires_at: dt.datetime | None
    min_chunk_size: int
    max_chunk_size: int
    location: str
    part_size: int | None = None
    parts: tuple[Part, ...] = ()
    #: The parts go straight to the blob store (:meth:`Client.part_url`).
    direct: bool = False
    #: ``open``, ``verifying`` (a direct upload whose digest the server checks) or
    #: ``refused`` (``error`` says why).
    status: str = "open"
    error: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Upload:
        """Build from the server's JSON (servers before numbered parts send no parts)."""
        return cls(data["id"], data["model"], data["version"], data["path"], data["offset"],
                   data.get("size"), data.get("digest"), _time(data.get("expires_at")),
                   data["min_chunk_size"], data["max_chunk_size"], data["location"],
                   data.get("part_size"),
                   tuple(Part.from_json(p) for p in data.get("parts") or ()),
                   bool(data.get("direct")), data.get("status") or "open", data.get("error"))


@dataclass(frozen=True)
class Finding(_Result):
    """What a scanner found in one file of a version (``severity``: e.g. ``error``,
    ``warning``, ``info``; the server's ``modelreg.scan.reject`` decides which reject)."""

    path: str
    scanner: str
    severity: str
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        """Build from the server's JSON."""
        return cls(data.get("path", ""), data.get("scanner", ""), data.get("severity", ""),
                   data.get("code", ""), data.get("message", ""),
                   dict(data.get("details") or {}))


@dataclass(frozen=True)
class PushResult(_Result):
    """What :meth:`~modelreg_client.Client.push` did.

    :ivar version: the version, as the server has it after finalizing (and aliasing).
    :ivar digest: the version digest, computed locally and equal to the server's.
    :ivar existing: ``True`` when a ready version with the same content already existed and
        nothing was uploaded.
    :ivar uploaded_files: paths whose bytes were sent.
    :ivar skipped_files: paths the draft already held (an interrupted push taken up again).
    :ivar uploaded_bytes: bytes sent in this call (a resumed upload sends only the rest).
    :ivar linked_files: paths whose content the server already held (in another version):
        added by digest, no bytes sent.
    :ivar findings: what the server's scanners found in the files (empty without scanners).
    :ivar excluded_files: paths under the directory that the ignore rules left out (a
        directory left out whole as ``name/``).
    """

    version: Version
    digest: str
    existing: bool
    uploaded_files: list[str]
    skipped_files: list[str]
    uploaded_bytes: int
    findings: list[Finding] = field(default_factory=list)
    linked_files: list[str] = field(default_factory=list)
    excluded_files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PullResult(_Result):
    """What :meth:`~modelreg_client.Client.pull` did.

    :ivar downloaded_files: paths fetched (in full or the rest of a partial file).
    :ivar skipped_files: paths already present locally with the right content.
    :ivar downloaded_bytes: bytes received in this call.
    :ivar cache_path: the version's directory in the local cache (``None`` for a pull that
        bypassed the cache); ``destination`` is the same directory when none was given.
    :ivar resolved_offline: the ref was resolved from the cache, not by the server (offline,
        or the server could not be reached).
    """

    model: str
    version: int
    digest: str | None
    destination: str
    files: list[FileEntry]
    downloaded_files: list[str]
    skipped_files: list[str]
    downloaded_bytes: int
    cache_path: str | None = None
    resolved_offline: bool = False
