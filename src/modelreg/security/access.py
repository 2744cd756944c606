"""Who may do what: levels, name patterns, token scopes, identities, and the one rule.

The rule, in one place (:class:`Access`): a caller's level on a model is

* for a global admin, ``admin``;
* otherwise the highest of the anonymous level and the levels of the grants (to the
  principal or to any group it belongs to) whose pattern matches the model's name;
* capped, when the caller used a token, by the highest level of the token's scopes that match
  the model's name (a token scoped ``read`` never writes, whatever its principal may do).

Names are compared normalized (:func:`modelreg.names.normalize_name`), so grants
follow a model whatever case it is written in; patterns are exact names or globs in which
``*`` matches any run of characters and ``?`` exactly one.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..errors import Unprocessable
from ..models.registry import NAME_LENGTH
from ..names import LIKE_ESCAPE, glob_to_like, normalize_name


class Level(enum.IntEnum):
    """Access levels on a model, ordered: ``read`` < ``write`` < ``admin``."""

    NONE = 0
    READ = 1
    WRITE = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """The lower-case name used in the API, in settings and in the database."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Level:
        """The level called ``text`` (``read``, ``write`` or ``admin``); ``ValueError`` else."""
        level = GRANTABLE.get(text.strip().lower())
        if level is None:
            raise ValueError(f"unknown level {text!r}: use read, write or admin")
        return level


#: The levels a grant or a scope can give, by name; also the permissions views declare.
GRANTABLE = {"read": Level.READ, "write": Level.WRITE, "admin": Level.ADMIN}

#: Characters of a (normalized) pattern: those of model names plus the two wildcards.
_PATTERN = re.compile(r"[a-z0-9._*?-]+")


def normalize_pattern(pattern: str) -> str:
    """Return ``pattern`` normalized like model names; 422 if it is not a valid pattern."""
    normalized = normalize_name(pattern)
    if not normalized or len(normalized) > NAME_LENGTH or not _PATTERN.fullmatch(normalized):
        raise Unprocessable(
            f"invalid model pattern {pattern!r}: use a model name, or a glob of letters, "
            f"digits, '.', '_', '-', '*' and '?' of at most {NAME_LENGTH} characters",
            code="invalid_pattern",
            details={"field": "pattern"},
        )
    return normalized


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` holds a wildcard (else it names one model exactly)."""
    return "*" in pattern or "?" in pattern


def _chunk_at(chunk: str, text: str, start: int) -> bool:
    """Whether ``chunk`` (``?`` matching any one character) matches ``text`` at ``start``."""
    if start < 0 or start + len(chunk) > len(text):
        return False
    return all(c == "?" or c == t for c, t in zip(chunk, text[start:], strict=False))


def pattern_matches(pattern: str, normalized_name: str) -> bool:
    """Whether the normalized ``pattern`` matches a model's normalized name.

    In time proportional to the lengths multiplied, whatever the pattern: the pieces between
    stars are found leftmost in turn, which is never worse than any other placement (a
    backtracking regular expression takes exponential time on ``*a*a*a*a*a*b``).
    """
    if not is_glob(pattern):
        return pattern == normalized_name
    name = normalized_name
    first, *rest = pattern.split("*")
    if not rest:  # only '?' wildcards
        return len(first) == len(name) and _chunk_at(first, name, 0)
    *middle, last = rest
    end = len(name) - len(last)
    if end < len(first) or not _chunk_at(first, name, 0) or not _chunk_at(last, name, end):
        return False
    position = len(first)
    for chunk in middle:
        if not chunk:
            continue
        while position + len(chunk) <= end and not _chunk_at(chunk, name, position):
            position += 1
        if position + len(chunk) > end:
            return False
        position += len(chunk)
    return True


def pattern_clause(column: Any, patterns: Iterable[str]) -> Any:
    """SQL that is true where ``column`` (normalized names) matches any of ``patterns``.

    The same meaning as :func:`pattern_matches`: ``=`` for exact names, ``LIKE`` (with the
    filter language's escaping) for globs.  No pattern at all matches nothing.
    """
    clauses = [
        column.like(glob_to_like(p), escape=LIKE_ESCAPE) if is_glob(p) else column == p
        for p in sorted(set(patterns))
    ]
    return sa.or_(*clauses) if clauses else sa.false()


# ----------------------------------------------------------------------------- scopes


@dataclass(frozen=True)
class Scope:
    """What a token may be used for: a level, on every model or on those a pattern matches."""

    level: Level
    pattern: str | None = None

    def __str__(self) -> str:
        return self.level.label if self.pattern is None else f"{self.level.label}:{self.pattern}"

    def covers(self, normalized_name: str) -> bool:
        """Whether the scope applies to the model of that normalized name."""
        return self.pattern is None or pattern_matches(self.pattern, normalized_name)


def parse_scope(text: str) -> Scope:
    """Parse one scope: ``read``, ``write``, ``admin``, optionally ``:<pattern>``; 422 else."""
    level_text, colon, pattern = text.partition(":")
    try:
        level = Level.parse(level_text)
    except ValueError:
        raise Unprocessable(
            f"invalid scope {text!r}: use read, write or admin, optionally followed by "
            "':' and a model pattern (write:fraud-*)",
            code="invalid_scope",
            details={"field": "scopes"},
        ) from None
    return Scope(level, normalize_pattern(pattern) if colon else None)


def parse_scopes(texts: Iterable[str]) -> tuple[Scope, ...]:
    """Parse scopes (each item may itself hold several, space-separated); 422 when none."""
    scopes = tuple(dict.fromkeys(parse_scope(part) for text in texts for part in text.split()))
    if not scopes:
        raise Unprocessable(
            "a token needs at least one scope (read, write or admin)",
            code="invalid_scope",
            details={"field": "scopes"},
        )
    return scopes


def format_scopes(scopes: Iterable[Scope]) -> str:
    """Scopes as stored: space-separated."""
    return " ".join(str(scope) for scope in scopes)


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Identity:
    """An authenticated caller, as the security policy found it for one request.

    :ivar principal_id: the principal's row id.
    :ivar name: the principal's name (``request.authenticated_userid``).
    :ivar is_admin: whether the principal is a global admin.
    :ivar grants: ``(normalized pattern, level)`` of the principal's grants and its groups'.
    :ivar scopes: the scopes of the token used, or ``None`` when the identity came from a
        plugin (no token, no cap).
    :ivar token_id: the public id of the token used, if any.
    """

    principal_id: int
    name: str
    is_admin: bool
    grants: tuple[tuple[str, Level], ...] = ()
    scopes: tuple[Scope, ...] | None = None
    token_id: str | None = None


@dataclass(frozen=True)
class Access:
    """What one caller may do: its identity (``None`` if anonymous) and the anonymous level."""

    identity: Identity | None
    anonymous: Level

    def _cap(self, normalized_name: str | None) -> Level:
        """The highest level the token's scopes allow there (anywhere, for ``None``)."""
        scopes = self.identity.scopes if self.identity is not None else None
        if scopes is None:
            return Level.ADMIN
        return max(
            (s.level for s in scopes if normalized_name is None or s.covers(normalized_name)),
            default=Level.NONE,
        )

    def level_on(self, model: str) -> Level:
        """The caller's level on the model named ``model`` (normalized here)."""
        identity = self.identity
        if identity is None:
            return self.anonymous
        name = normalize_name(model)
        if identity.is_admin:
            granted = Level.ADMIN
        else:
            granted = max(
                (level for pattern, level in identity.grants if pattern_matches(pattern, name)),
                default=Level.NONE,
            )
            granted = max(granted, self.anonymous)
        return min(granted, self._cap(name))

    def level_anywhere(self) -> Level:
        """The highest level the caller has on some model (for routes without a model)."""
        identity = self.identity
        if identity is None:
            return self.anonymous
        if identity.is_admin:
            granted = Level.ADMIN
        else:
            granted = max((level for _, level in identity.grants), default=Level.NONE)
            granted = max(granted, self.anonymous)
        return min(granted, self._cap(None))

    @property
    def is_global_admin(self) -> bool:
        """Whether the caller may use the admin API: an admin, with an unrestricted token."""
        identity = self.identity
        if identity is None or not identity.is_admin:
            return False
        return identity.scopes is None or any(
            s.level == Level.ADMIN and s.pattern is None for s in identity.scopes
        )

    def allows(self, required: Level, model: str | None) -> bool:
        """Whether the caller holds ``required`` on ``model``, or, for ``None``, on the
        registry: ``admin`` there is for global admins only; ``read`` is for every known
        caller (and anonymous ones where anonymous reads are on), since a listing shows only
        what it may read; ``write`` needs that level on some model (the view narrows down)."""
        if model is not None:
            return self.level_on(model) >= required
        if required == Level.ADMIN:
            return self.is_global_admin
        if required == Level.READ and self.identity is not None:
            return True
        return self.level_anywhere() >= required

    def without_token(self) -> Access:
        """The same caller without its token's scopes: what its principal may do."""
        if self.identity is None or self.identity.scopes is None:
            return self
        return Access(dataclasses.replace(self.identity, scopes=None), self.anonymous)

    def readable_clause(self, column: Any) -> Any | None:
        """SQL restricting ``column`` (models' normalized names) to what the caller may read.

        ``None`` when the caller may read every model, so that the query stays unchanged.
        """
        identity = self.identity
        if identity is None:
            return None if self.anonymous >= Level.READ else sa.false()
        clauses = []
        if not identity.is_admin and self.anonymous < Level.READ:
            clauses.append(pattern_clause(column, (pattern for pattern, _ in identity.grants)))
        if identity.scopes is not None and not any(s.pattern is None for s in identity.scopes):
            clauses.append(pattern_clause(column, (s.pattern for s in identity.scopes)))
        return sa.and_(*clauses) if clauses else None
