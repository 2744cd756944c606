"""Policy rules of the core, configured from the ini: sizes, quotas, protected aliases and
retention.

The cheap per-document rules (model-name pattern, required tags and metadata keys) are the
``builtin-validators`` plugin (:mod:`modelreg.validation.builtin`); the rules here need the
database (what a version or a model already holds) or the security policy, so the core
applies them itself.  Every setting is optional; unset means "no limit".

``modelreg.policy.max_version_size`` (bytes; suffixes ``KB MB GB TB`` = powers of 1000,
``KiB MiB GiB TiB`` = powers of 1024, e.g. ``10GiB``)
    the most bytes the files of one version may add up to.  An upload that would take a
    draft over it is refused with ``422 validation_failed`` (problem ``version_too_large``),
    counting the bytes the draft's open upload sessions hold (their declared size, or what
    they received so far):
    before its body is read when ``Content-Length`` (or an upload session's declared
    ``size``, or a chunk's end) already says so, and again once the bytes are stored,
    under the version's lock, before the file is recorded, so a refused upload leaves no
    file (its blob is garbage for ``modelreg gc``).  Finalize checks it once more: a draft
    over the limit is ``rejected`` with that problem.
``modelreg.policy.quota.max_versions``
    the most versions a model may have that are not ``archived`` (drafts, versions being
    validated, ready and rejected ones).  Creating one more is refused with
    ``422 validation_failed`` (problem ``quota_max_versions``).
``modelreg.policy.quota.max_bytes`` (bytes, suffixes as above)
    the most bytes the files of a model's versions that are not ``archived`` may add up to
    (each version's files counted, even when two versions share a blob).  Uploads and
    finalize are refused or rejected like ``max_version_size`` (problem
    ``quota_max_bytes``).
``modelreg.policy.protected_aliases``
    whitespace-separated entries ``alias`` or ``alias:requirement[,requirement...]``, where
    a requirement is a tag key (the version must carry the tag) or ``key=value`` (it must
    carry the tag with that value), e.g. ``production:approved=true staging:reviewed``.
    Setting, moving or deleting a protected alias needs ``admin`` on the model (``403
    protected_alias`` otherwise, decided by the security policy); the version it points at
    must meet every requirement (``422 validation_failed``, problem ``protected_alias_tag``,
    all missing tags together), and a tag of that version cannot be deleted or changed while
    the alias needs it.
``modelreg.policy.retention.keep_last``
    keep the newest N versions (by number) of each model that are ``ready`` or ``rejected``
    and that no alias points at; the older ones are archived or deleted.  Drafts, versions
    being validated and versions an alias points at are never touched and do not count.
    Retention runs in the background worker after a version of the model becomes ready or
    an alias of it moves or goes, and for every model in ``modelreg gc`` (before it collects
    blobs), so that collection frees the bytes of what it archived or deleted.
``modelreg.policy.retention.action`` (``archive`` or ``delete``, default ``archive``)
    ``archive`` keeps the version's record (number, metadata, tags, digest, its file list)
    with status ``archived``: its files can no longer be downloaded (``410``), it counts for
    no quota, and its blobs are freed by garbage collection unless another version holds
    them; it never becomes ready again.  ``delete`` deletes the version like ``DELETE``
    does (with ``delete``, archived versions are deleted as well).  Either way the change is
    audited (actor ``system:retention``) and written to the outbox.

Every problem a request breaks is reported together, in one ``422 validation_failed`` with
``details.problems`` (the shape of the validation hooks' problems) and the figures behind the
size rules (``max_version_size`` and ``version_size``, ``max_model_bytes`` and
``model_bytes``, ``max_model_versions`` and ``model_versions``).  422 rather than 413 for
sizes: the body is one the server accepts; it is the version or the model that would break
a rule, possibly several at once, and the answer must list them all.

A wrong value stops start-up with a message that names the setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from pyramid.config import Configurator
from sqlalchemy.orm import Session

from . import settings as settings_keys
from .errors import Unprocessable
from .models import Alias, File, UploadPart, UploadSession, Version, utcnow
from .names import check_alias, check_tag
from .types import Problem

PREFIX = "modelreg.policy."
MAX_VERSION_SIZE = settings_keys.POLICY_MAX_VERSION_SIZE
QUOTA_MAX_VERSIONS = settings_keys.POLICY_QUOTA_MAX_VERSIONS
QUOTA_MAX_BYTES = settings_keys.POLICY_QUOTA_MAX_BYTES
PROTECTED_ALIASES = settings_keys.POLICY_PROTECTED_ALIASES
RETENTION_KEEP_LAST = settings_keys.POLICY_RETENTION_KEEP_LAST
RETENTION_ACTION = settings_keys.POLICY_RETENTION_ACTION
RETENTION_ACTIONS = ("archive", "delete")
#: The kind of the worker job that applies retention to one model.
RETENTION_JOB = "apply_retention"
#: The actor the audit log records for what retention archives or deletes.
RETENTION_ACTOR = "system:retention"
#: Statuses retention may act on (and that count towards ``keep_last``).
RETAINED_STATUSES = ("ready", "rejected")
ARCHIVED = "archived"

_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """Bytes written as ``123``, ``10GiB``, ``500 MB`` (case-insensitive); ``ValueError``
    otherwise."""
    match = _SIZE.fullmatch(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size: write bytes, optionally followed by "
                         "KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (of 1024)")
    return int(match.group(1)) * _UNITS[unit]


def format_size(size: int) -> str:
    """``size`` bytes for a message: ``10737418240 bytes (10 GiB)``."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        factor = _UNITS[unit.lower()]
        if size >= factor:
            return f"{size} bytes ({size / factor:.3g} {unit})"
    return f"{size} bytes"


@dataclass(frozen=True)
class TagRequirement:
    """A tag the target of a protected alias must carry (with ``value``, if not ``None``)."""

    key: str
    value: str | None = None

    def met_by(self, tags: dict[str, str]) -> bool:
        """Whether ``tags`` satisfy the requirement."""
        return self.key in tags and (self.value is None or tags[self.key] == self.value)

    def __str__(self) -> str:
        return self.key if self.value is None else f"{self.key}={self.value}"


@dataclass(frozen=True)
class PolicyRules:
    """The policy rules (sizes, quotas, protected aliases, retention) parsed from the
    settings: :func:`policy_rules`.  Not the security policy, which decides who may do what
    (:func:`modelreg.security.policy.security_policy`)."""

    max_version_size: int | None = None
    max_versions: int | None = None
    max_bytes: int | None = None
    protected_aliases: dict[str, tuple[TagRequirement, ...]] = field(default_factory=dict)
    keep_last: int | None = None
    retention_action: str = "archive"

    @property
    def retention(self) -> bool:
        """Whether retention is configured."""
        return self.keep_last is not None

    def is_protected(self, alias: str) -> bool:
        """Whether ``alias`` is a protected alias."""
        return alias in self.protected_aliases


def _setting(settings: dict[str, Any], key: str) -> str | None:
    value = settings.get(key)
    if value is None or not str(value).strip():
        return None
    return str(value).strip()


def _size(settings: dict[str, Any], key: str) -> int | None:
    value = _setting(settings, key)
    if value is None:
        return None
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    if size <= 0:
        raise ValueError(f"{key} must be more than 0 bytes (leave it unset for no limit)")
    return size


def _count(settings: dict[str, Any], key: str, minimum: int) -> int | None:
    value = _setting(settings, key)
    if value is None:
        return None
    if not value.isdigit() or int(value) < minimum:
        raise ValueError(f"{key} = {value!r}: write a whole number of at least {minimum}")
    return int(value)


def _protected(text: str | None) -> dict[str, tuple[TagRequirement, ...]]:
    aliases: dict[str, tuple[TagRequirement, ...]] = {}
    for entry in (text or "").split():
        alias, _, rest = entry.partition(":")
        try:
            check_alias(alias)
            requirements = []
            for item in filter(None, rest.split(",")):
                key, equals, value = item.partition("=")
                check_tag(key, value if equals else None)
                requirements.append(TagRequirement(key, value if equals else None))
        except Unprocessable as exc:
            raise ValueError(f"{PROTECTED_ALIASES}: entry {entry!r}: {exc.message}") from None
        aliases[alias] = tuple(requirements)
    return aliases


@lru_cache(maxsize=16)
def _parse(items: tuple[tuple[str, str], ...]) -> PolicyRules:
    settings = dict(items)
    action = (_setting(settings, RETENTION_ACTION) or "archive").lower()
    if action not in RETENTION_ACTIONS:
        raise ValueError(f"{RETENTION_ACTION} = {action!r}: use archive or delete")
    return PolicyRules(
        max_version_size=_size(settings, MAX_VERSION_SIZE),
        max_versions=_count(settings, QUOTA_MAX_VERSIONS, 1),
        max_bytes=_size(settings, QUOTA_MAX_BYTES),
        protected_aliases=_protected(_setting(settings, PROTECTED_ALIASES)),
        keep_last=_count(settings, RETENTION_KEEP_LAST, 0),
        retention_action=action,
    )


def policy_rules(settings: dict[str, Any]) -> PolicyRules:
    """The :class:`PolicyRules` of ``settings`` (parsed once per distinct set of values).

    :raises ValueError: naming the setting, when a value is wrong.
    """
    return _parse(tuple(sorted(
        (key, str(value)) for key, value in settings.items() if key.startswith(PREFIX)
    )))


# ---------------------------------------------------------------------------- usage


def _live_files(model_id: int) -> Any:
    """Files of the model's versions that are not archived."""
    return (
        sa.select(File.size)
        .join(Version, Version.id == File.version_id)
        .where(Version.model_id == model_id, Version.status != ARCHIVED)
    )


def version_bytes(db: Session, version_id: int, *, excluding: str | None = None) -> int:
    """Bytes of the files of a version, leaving out the file at path ``excluding``."""
    query = sa.select(sa.func.coalesce(sa.func.sum(File.size), 0)).where(
        File.version_id == version_id)
    if excluding is not None:
        query = query.where(File.path != excluding)
    return int(db.scalar(query))


def model_bytes(db: Session, model_id: int, *, excluding: tuple[int, str] | None = None) -> int:
    """Bytes of the files of a model's versions that are not archived, leaving out the file
    ``(version id, path)`` of ``excluding``."""
    files = _live_files(model_id)
    if excluding is not None:
        version_id, path = excluding
        files = files.where(sa.not_(sa.and_(File.version_id == version_id, File.path == path)))
    sizes = files.subquery()
    return int(db.scalar(sa.select(sa.func.coalesce(sa.func.sum(sizes.c.size), 0))))


def model_versions(db: Session, model_id: int) -> int:
    """How many versions of a model are not archived."""
    return int(db.scalar(
        sa.select(sa.func.count()).select_from(Version)
        .where(Version.model_id == model_id, Version.status != ARCHIVED)
    ))


def _held_by_sessions(exclude_upload: int | None) -> Any:
    """Bytes each open upload session holds or will hold: its declared size, or else what
    its parts (received, and being received) add up to."""
    parts = (sa.select(sa.func.coalesce(sa.func.sum(UploadPart.size), 0))
             .where(UploadPart.upload_id == UploadSession.id).scalar_subquery())
    held = sa.func.coalesce(UploadSession.size, parts)
    query = sa.select(held.label("held")).where(UploadSession.expires_at > utcnow(),
                                                UploadSession.status != "refused")
    if exclude_upload is not None:
        query = query.where(UploadSession.id != exclude_upload)
    return query


def session_bytes(db: Session, *, version_id: int | None = None, model_id: int | None = None,
                  exclude_upload: int | None = None) -> int:
    """Bytes held by the open upload sessions of a version (or of a model's versions that
    are not archived), leaving out the session ``exclude_upload``."""
    query = _held_by_sessions(exclude_upload)
    if version_id is not None:
        query = query.where(UploadSession.version_id == version_id)
    if model_id is not None:
        query = query.join(Version, Version.id == UploadSession.version_id).where(
            Version.model_id == model_id, Version.status != ARCHIVED)
    held = query.subquery()
    return int(db.scalar(sa.select(sa.func.coalesce(sa.func.sum(held.c.held), 0))))


def refusal(problems: list[Problem], subject: str, **details: Any) -> Unprocessable:
    """The one ``422 validation_failed`` that reports every problem of a request."""
    return Unprocessable(
        f"{subject} breaks {len(problems)} rule(s): " + "; ".join(p.message for p in problems),
        code="validation_failed",
        details={"problems": [p.as_json() for p in problems], **details},
    )


def size_problems(
    db: Session, policy: PolicyRules, version: Version, *, path: str | None, size: int,
    phase: str = "upload", upload_id: int | None = None,
) -> tuple[list[Problem], dict[str, Any]]:
    """The size rules an upload of ``size`` bytes to ``path`` of a draft would break (or,
    with ``path=None``, that the version as it is breaks), and the figures behind them.

    An upload counts what the open upload sessions of the version (and of the model) hold
    besides the files, so that bytes parked in sessions cannot exceed a limit.

    :param phase: ``upload`` (the message speaks of the upload) or ``finalize``.
    :param upload_id: the session the upload belongs to (its own bytes are ``size``).
    :returns: the problems, and details naming each limit and the size it was compared to.
    """
    problems: list[Problem] = []
    details: dict[str, Any] = {}
    label = f"version {version.number} of {version.model.name!r}"
    verb = "the upload would make" if phase == "upload" else "the files make"
    if policy.max_version_size is not None:
        total = version_bytes(db, version.id, excluding=path) + (size if path else 0)
        if path:
            total += session_bytes(db, version_id=version.id, exclude_upload=upload_id)
        details.update(max_version_size=policy.max_version_size, version_size=total)
        if total > policy.max_version_size:
            problems.append(Problem(
                "version_too_large",
                f"{verb} {label} {format_size(total)}, over the limit of "
                f"{format_size(policy.max_version_size)} ({MAX_VERSION_SIZE})",
                "size",
            ))
    if policy.max_bytes is not None:
        excluding = (version.id, path) if path else None
        total = model_bytes(db, version.model_id, excluding=excluding) + (size if path else 0)
        if path:
            total += session_bytes(db, model_id=version.model_id, exclude_upload=upload_id)
        details.update(max_model_bytes=policy.max_bytes, model_bytes=total)
        if total > policy.max_bytes:
            problems.append(Problem(
                "quota_max_bytes",
                f"{verb} the versions of {version.model.name!r} hold {format_size(total)}, "
                f"over the model's quota of {format_size(policy.max_bytes)} "
                f"({QUOTA_MAX_BYTES}): delete versions, or let retention archive them",
                "size",
            ))
    return problems, details


def check_upload(db: Session, settings: dict[str, Any], version: Version, path: str,
                 size: int | None, *, upload_id: int | None = None) -> None:
    """Refuse (422, every problem together) an upload of ``size`` bytes to ``path`` of a
    draft that would break a size rule; nothing to check when ``size`` is unknown.

    :param upload_id: the upload session the bytes belong to, if any (its own bytes are
        ``size``; every other open session's are counted too)."""
    policy = policy_rules(settings)
    if size is None or (policy.max_version_size is None and policy.max_bytes is None):
        return
    problems, details = size_problems(db, policy, version, path=path, size=size,
                                      upload_id=upload_id)
    if problems:
        raise refusal(problems, f"the upload of {path!r}", **details)


def check_new_version(db: Session, settings: dict[str, Any], model: Any) -> None:
    """Refuse (422) a new version of ``model`` beyond ``quota.max_versions``."""
    policy = policy_rules(settings)
    if policy.max_versions is None:
        return
    count = model_versions(db, model.id)
    if count >= policy.max_versions:
        problem = Problem(
            "quota_max_versions",
            f"model {model.name!r} has {count} versions that are not archived, its quota "
            f"({QUOTA_MAX_VERSIONS}) is {policy.max_versions}: delete versions, or let "
            "retention archive them",
        )
        raise refusal([problem], f"a new version of {model.name!r}",
                      max_model_versions=policy.max_versions, model_versions=count)


# ------------------------------------------------------------------------ retention


def retention_victims(db: Session, policy: PolicyRules, model_id: int) -> list[Version]:
    """The versions of a model that retention archives or deletes, oldest first."""
    if not policy.retention:
        return []
    aliased = sa.select(Alias.version_id).where(Alias.model_id == model_id)
    candidates = db.scalars(
        sa.select(Version)
        .where(Version.model_id == model_id, Version.status.in_(RETAINED_STATUSES),
               Version.id.not_in(aliased))
        .order_by(Version.number.desc())
    ).all()
    victims = list(candidates[policy.keep_last:])
    if policy.retention_action == "delete":
        victims += db.scalars(
            sa.select(Version).where(Version.model_id == model_id, Version.status == ARCHIVED)
        ).all()
    return sorted(victims, key=lambda v: v.number)


def includeme(config: Configurator) -> None:
    """Check the policy settings at start-up: a wrong value stops it, naming the setting."""
    try:
        policy_rules(config.get_settings())
    except ValueError as exc:
        raise RuntimeError(f"invalid policy setting: {exc}") from None
