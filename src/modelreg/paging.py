"""Keyset pagination with opaque page tokens.

A page token encodes the sort key of the last row served plus a fingerprint of the query
(filter and order), so a page is the rows strictly after that key: pages stay stable while
rows are inserted, and a token cannot be replayed against a different query.  Tokens are not
signed: a client can forge one, so :func:`decode_token` checks that each value has the type
of the column it is compared with before it reaches a query.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .errors import BadRequest, Unprocessable

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: Integers in a page token fit a signed 64-bit column.
_INT_LIMIT = 2**63 - 1
#: Longest string a page token may carry (names and keys are far shorter).
_MAX_TOKEN_STRING = 1024
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class Order:
    """A sort order: a column, its direction, and the unique column that breaks ties."""

    name: str
    column: Any
    descending: bool
    tiebreak: Any

    def clauses(self) -> list[Any]:
        """ORDER BY clauses."""
        if self.descending:
            return [self.column.desc(), self.tiebreak.desc()]
        return [self.column.asc(), self.tiebreak.asc()]

    def after(self, key: list[Any]) -> Any:
        """WHERE clause selecting the rows after ``key`` (written out, so indexes apply)."""
        value, tiebreak = key
        if self.descending:
            return sa.or_(
                self.column < value, sa.and_(self.column == value, self.tiebreak < tiebreak)
            )
        return sa.or_(self.column > value, sa.and_(self.column == value, self.tiebreak > tiebreak))


def parse_order(text: str | None, columns: dict[str, Any], tiebreak: Any, default: str) -> Order:
    """Parse ``order_by`` (``"created desc"``, ``"name"``) against the allowed ``columns``."""
    parts = (text or default).split()
    if not parts or len(parts) > 2 or parts[0] not in columns or (
        len(parts) == 2 and parts[1].lower() not in ("asc", "desc")
    ):
        raise BadRequest(
            f"invalid order_by {text!r}: use one of {', '.join(sorted(columns))}, "
            "optionally followed by 'asc' or 'desc'",
            code="invalid_order_by",
            details={"allowed": sorted(columns)},
        )
    descending = len(parts) == 2 and parts[1].lower() == "desc"
    return Order(parts[0], columns[parts[0]], descending, tiebreak)


def parse_page_size(value: str | None) -> int:
    """Parse ``page_size``: 1 to :data:`MAX_PAGE_SIZE`, default :data:`DEFAULT_PAGE_SIZE`.

    400 when it is not an integer (ASCII digits, optionally negative; ``page_size=`` is
    none), 422 when it is one
    outside the range: a larger page is refused, never silently clamped.
    """
    if value is None:
        return DEFAULT_PAGE_SIZE
    if not _INTEGER.fullmatch(value):
        raise BadRequest(
            f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}",
            code="invalid_page_size",
            details={"min": 1, "max": MAX_PAGE_SIZE},
        )
    # Compare by length first: int() of thousands of digits is slow, and refused anyway.
    size = int(value) if len(value) <= 8 else MAX_PAGE_SIZE + 1
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise Unprocessable(
            f"page_size must be from 1 to {MAX_PAGE_SIZE}, not {value[:20]}",
            code="invalid_page_size",
            details={"min": 1, "max": MAX_PAGE_SIZE},
        )
    return size


def fingerprint(*parts: str | None) -> str:
    """A short digest of the query a token belongs to."""
    return hashlib.sha256("\x00".join(p or "" for p in parts).encode()).hexdigest()[:16]


def _encode_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"t": value.isoformat()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"t"}:
        return dt.datetime.fromisoformat(value["t"])
    return value


def encode_token(key: list[Any], query: str) -> str:
    """An opaque token for the page after the row whose sort key is ``key``."""
    raw = json.dumps({"k": [_encode_value(v) for v in key], "q": query}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str | None, query: str, order: Order) -> list[Any] | None:
    """The sort key a token carries, or ``None`` without a token; 400 if it is not ours.

    Each value must have the Python type of the column it is compared with (``order``'s
    column, then its tie-break), so that a forged token is refused here instead of failing
    in the database.
    """
    if not token:
        return None
    try:
        if len(token) > 4 * _MAX_TOKEN_STRING:
            raise ValueError("token too long")
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        key = [_decode_value(v) for v in data["k"]]
        if data["q"] != query or len(key) != 2:
            raise ValueError("token of another query")
        for value, column in zip(key, (order.column, order.tiebreak), strict=True):
            _check_value(value, column)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadRequest(
            "invalid page_token: pass the next_page_token of the same query unchanged",
            code="invalid_page_token",
        ) from exc
    return key


def _check_value(value: Any, column: Any) -> None:
    """Raise :class:`ValueError` unless ``value`` may be compared with ``column``."""
    expected = column.type.python_type
    if isinstance(value, bool) or not isinstance(value, expected):
        raise ValueError(f"a {type(value).__name__} where a {expected.__name__} belongs")
    if isinstance(value, int) and abs(value) > _INT_LIMIT:
        raise ValueError("integer out of range")
    if isinstance(value, str):
        if len(value) > _MAX_TOKEN_STRING or "\x00" in value:
            raise ValueError("string too long")
        # JSON's "\ud800" decodes to a lone surrogate, which no database driver can send:
        # UnicodeEncodeError is a ValueError.
        value.encode("utf-8")
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        raise ValueError("timestamps are naive UTC")
