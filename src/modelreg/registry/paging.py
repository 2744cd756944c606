"""Keyset pagination with opaque page tokens.

A page token encodes the sort key of the last row served plus a fingerprint of the query
(filter and order), so a page is the rows strictly after that key: pages stay stable while
rows are inserted, and a token cannot be replayed against a different query.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..errors import BadRequest

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


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
    """Parse ``page_size``: 1 to :data:`MAX_PAGE_SIZE`, default :data:`DEFAULT_PAGE_SIZE`."""
    if value is None or value == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise BadRequest(
            f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}",
            code="invalid_page_size",
            details={"max": MAX_PAGE_SIZE},
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


def decode_token(token: str | None, query: str) -> list[Any] | None:
    """The sort key a token carries, or ``None`` without a token; 400 if it is not ours."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key = [_decode_value(v) for v in data["k"]]
        if data["q"] != query or len(key) != 2:
            raise ValueError("token of another query")
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest(
            "invalid page_token: pass the next_page_token of the same query unchanged",
            code="invalid_page_token",
        ) from exc
    return key
