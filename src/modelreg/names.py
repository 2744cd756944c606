"""The rules for names: models, aliases, tag keys and version refs.  One place for each rule."""

from __future__ import annotations

import re
import unicodedata

from .errors import Unprocessable

MODEL_NAME_MAX = 128
ALIAS_MAX = 64
TAG_KEY_MAX = 128
TAG_VALUE_MAX = 255
#: The largest version number (and row id): an integer column's range on every database.
MAX_NUMBER = 2**31 - 1

_MODEL_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_ALIAS = re.compile(r"[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?")
_TAG_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]+")

#: Refs that are never alias names: ``latest`` resolves to the newest ready version.
LATEST = "latest"
DIGEST_PREFIX = "sha256:"


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control character (NUL included), which no name may."""
    return _CONTROL.search(text) is not None


def is_number(text: str) -> bool:
    """Whether ``text`` writes a number: ASCII digits only (not '²', Arabic-Indic or fullwidth
    digits, which ``str.isdigit`` accepts)."""
    return _DIGITS.fullmatch(text) is not None


def parse_number(text: str) -> int | None:
    """The number ``text`` writes (a version number, a row id), if it is one from 0 to
    :data:`MAX_NUMBER`; else ``None``: a number beyond names nothing that can exist, and
    databases refuse to bind it (PostgreSQL past 32 bits, SQLite past 64)."""
    if not is_number(text) or len(text.lstrip("0")) > len(str(MAX_NUMBER)):
        return None
    number = int(text)
    return number if number <= MAX_NUMBER else None


def normalize_name(name: str) -> str:
    """The form two names are compared in: NFKC, surrounding spaces removed, case-folded.

    ``Fraud``, its fullwidth form and ``fraud `` all normalize to ``fraud``, so a model named like
    any of them is taken once ``fraud`` exists.
    """
    return unicodedata.normalize("NFKC", name).strip().casefold()


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise 422 naming the rule broken."""
    rule = None
    if not name:
        rule = "must not be empty"
    elif has_control(name):
        rule = "must not contain control characters"
    elif len(name) > MODEL_NAME_MAX:
        rule = f"must be at most {MODEL_NAME_MAX} characters"
    elif ".." in name:
        rule = "must not contain '..'"
    elif not _MODEL_NAME.fullmatch(name):
        rule = (
            "must use only ASCII letters, digits, '.', '_' and '-', "
            "and start and end with a letter or digit"
        )
    if rule:
        raise Unprocessable(
            f"invalid model name {name!r}: it {rule}",
            code="invalid_name",
            details={"field": "name", "rule": rule},
        )
    return name


def check_alias(alias: str) -> str:
    """Return ``alias`` if it is a valid alias name, else raise 422 naming the rule broken."""
    rule = None
    if not alias or len(alias) > ALIAS_MAX:
        rule = f"must be 1 to {ALIAS_MAX} characters"
    elif alias.isdigit():
        rule = "must not be all digits (that would read as a version number)"
    elif alias == LATEST:
        rule = f"must not be {LATEST!r} (it always means the newest ready version)"
    elif not _ALIAS.fullmatch(alias):
        rule = (
            "must use only lower-case ASCII letters, digits, '_' and '-', "
            "and start and end with a letter or digit"
        )
    if rule:
        raise Unprocessable(
            f"invalid alias {alias!r}: it {rule}",
            code="invalid_alias",
            details={"field": "alias", "rule": rule},
        )
    return alias


def check_tag(key: str, value: str | None = None) -> None:
    """Raise 422 unless ``key`` (and ``value``, when given) make a valid tag."""
    if not key or len(key) > TAG_KEY_MAX or not _TAG_KEY.fullmatch(key):
        raise Unprocessable(
            f"invalid tag key {key!r}: it must be 1 to {TAG_KEY_MAX} of ASCII letters, "
            "digits, '_', '.' and '-', not starting with '.' or '-'",
            code="invalid_tag",
            details={"field": "tags", "key": key},
        )
    if value is not None and (len(value) > TAG_VALUE_MAX or _CONTROL.search(value)):
        raise Unprocessable(
            f"invalid value for tag {key!r}: it must be at most {TAG_VALUE_MAX} characters "
            "without control characters",
            code="invalid_tag",
            details={"field": f"tags.{key}", "key": key},
        )


#: The escape character of the ``LIKE`` patterns built from shell patterns.
LIKE_ESCAPE = "\\"


def glob_to_like(pattern: str) -> str:
    """Translate a shell pattern into a ``LIKE`` pattern whose escape character is ``\\``.

    ``*`` becomes ``%``, ``?`` becomes ``_``; ``%``, ``_`` and ``\\`` are escaped so they match
    themselves; every other character is literal.
    """
    out: list[str] = []
    for char in pattern:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in ("%", "_", LIKE_ESCAPE):
            out.append(LIKE_ESCAPE + char)
        else:
            out.append(char)
    return "".join(out)
