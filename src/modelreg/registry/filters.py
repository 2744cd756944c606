"""The filter language used to search models and versions (``?filter=...``).

A filter is a boolean expression over the fields of a model or a version::

    name GLOB 'fraud-*' AND tag.team = 'risk'
    status = 'ready' AND (metadata.metrics.auc >= 0.9 OR alias = 'champion')
    NOT tag.deprecated IS NOT NULL AND created >= '2026-01-01'

Syntax
------

Keywords (``AND``, ``OR``, ``NOT``, ``IN``, ``IS``, ``NULL``, ``LIKE``, ``GLOB``, ``TRUE``,
``FALSE``) are case-insensitive; field names are too, tag keys and metadata paths are not.
``NOT`` binds tighter than ``AND``, which binds tighter than ``OR``; use parentheses to group::

    expr       := or_expr
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := not_expr ("AND" not_expr)*
    not_expr   := "NOT" not_expr | atom
    atom       := "(" expr ")" | comparison
    comparison := field op value
                | field ["NOT"] "IN" "(" value ("," value)* ")"
                | field "IS" ["NOT"] "NULL"
                | field ["NOT"] ("LIKE" | "GLOB") string
    op         := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    value      := string | number | TRUE | FALSE
    field      := identifier ("." segment)*

Strings are quoted with ``'single'`` or ``"double"`` quotes; inside them a backslash escapes
the quote characters and itself (``\\'``, ``\\"``, ``\\\\``) and nothing else.  Numbers are
integers or decimals with an optional leading ``-`` and exponent (``3``, ``-1``, ``0.95``,
``1e-3``).  Text values are always quoted: ``name = fraud`` is an error, ``name = 'fraud'`` is
not.

``LIKE`` takes an SQL pattern: ``%`` matches any run of characters, ``_`` exactly one, and a
backslash makes the next character literal (write it ``\\\\`` inside the quotes:
``name LIKE 'fraud\\\\_%'``).  ``GLOB`` takes a shell pattern: ``*`` matches any run of
characters, ``?`` exactly one, and every other character matches itself.  Both are
case-sensitive (but see ``name`` below).

Fields of models
----------------

=================  ==============================================  ==============================
field              operators                                       values
=================  ==============================================  ==============================
``name``           ``= != < <= > >= IN LIKE GLOB``                 strings, matched
                                                                   case-insensitively
``description``    ``= != LIKE GLOB``                              strings
``tag.<key>``      ``= != IN LIKE GLOB IS [NOT] NULL``             strings
``alias``          ``= != IN LIKE GLOB IS [NOT] NULL``             strings
``created``,       ``= != < <= > >=``                              ISO-8601 timestamps
``updated``
=================  ==============================================  ==============================

Fields of versions
------------------

=================  ==============================================  ==============================
field              operators                                       values
=================  ==============================================  ==============================
``number``         ``= != < <= > >= IN``                           integers
``status``         ``= != IN``                                     ``draft``, ``validating``,
                                                                   ``ready``, ``rejected`` or
                                                                   ``archived``
``description``    ``= != LIKE GLOB``                              strings
``digest``         ``= != IN IS [NOT] NULL``                       strings
``created``,       ``= != < <= > >=``                              ISO-8601 timestamps
``updated``
``tag.<key>``      ``= != IN LIKE GLOB IS [NOT] NULL``             strings
``alias``          ``= != IN LIKE GLOB IS [NOT] NULL``             strings
``metadata.<p>``   ``= != < <= > >= IN LIKE GLOB IS [NOT] NULL``   strings, numbers, TRUE/FALSE
``model``          ``= != IN LIKE GLOB``                           strings, matched
                                                                   case-insensitively
=================  ==============================================  ==============================

Every operator has a negated form (``!=`` for ``=``, ``NOT IN``, ``NOT LIKE``, ``NOT GLOB``,
``IS NULL`` for ``IS NOT NULL``); a field accepts the negated form whenever it accepts the
positive one.

Meaning
-------

* Every comparison is either true or false, never "unknown": a negated comparison is exactly
  ``NOT`` of the positive one.  ``tag.team != 'fraud'`` is ``NOT tag.team = 'fraud'`` and so
  also matches models that have no ``team`` tag; ``digest != 'sha256:...'`` also matches
  versions without a digest; ``metadata.framework != 'pytorch'`` also matches versions whose
  metadata has no ``framework``.
* ``name`` and ``model`` compare the normalized name (NFKC, trimmed, case-folded) with the
  value normalized the same way, so ``name = 'Fraud-Detector'`` finds ``fraud-detector``; this
  applies to ``LIKE`` and ``GLOB`` patterns too.  ``<``/``>`` order names in byte order
  (code-point order) on every database.
* ``tag.<key> = 'v'`` is true when the item has the tag ``<key>`` with value ``v`` (``IN``,
  ``LIKE``, ``GLOB`` likewise); ``tag.<key> IS NOT NULL`` when it has the tag at all, whatever
  its value.  A key is everything after ``tag.``: letters, digits, ``_``, ``.`` and ``-``.
* On models, ``alias = 'champion'`` is true when the model has an alias of that name;
  ``alias IS NOT NULL`` when it has any alias.  On versions, when that alias points to the
  version.
* ``created`` and ``updated`` take quoted timestamps: ``'2026-01-01'`` (midnight UTC),
  ``'2026-01-01T12:00:00Z'``, ``'2026-01-01T12:00:00.5+02:00'``; without an offset, UTC.
* ``metadata.<path>`` looks into the version's metadata document: ``metadata.metrics.auc``
  is the ``auc`` key of the ``metrics`` object.  Path segments are object keys made of
  letters, digits, ``_`` and ``-``.  Comparisons are typed by the literal: a string compares
  with string values only, a number with numbers only, ``TRUE``/``FALSE`` (``=`` and ``!=``
  only) with booleans only; a value of another type, a JSON ``null`` or a missing key make the
  comparison false.  ``metadata.<path> IS NOT NULL`` is true when the key is present with a
  value other than JSON ``null``.

Limits: a filter has at most 2000 characters, 100 comparisons and 32 levels of nesting
(parentheses and ``NOT``); a ``LIKE`` or ``GLOB`` pattern at most 10 runs of ``%`` or ``*``
(each run costs the database a scan of the string per row).  Any error is a ``400
invalid_filter`` whose details give the 0-based character position of the problem.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement

from ..errors import BadRequest
from ..models import Alias, Model, ModelTag, Version, VersionTag, parse_timestamp
from ..names import LIKE_ESCAPE, glob_to_like, normalize_name

__all__ = [
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "MAX_FILTER_TERMS",
    "MAX_PATTERN_WILDCARDS",
    "And",
    "Comparison",
    "Node",
    "Not",
    "Or",
    "Value",
    "glob_to_like",
    "model_filter",
    "parse_filter",
    "version_filter",
]

#: Longest filter accepted, in characters.
MAX_FILTER_LENGTH = 2000
#: Deepest nesting of parentheses and ``NOT`` accepted.
MAX_FILTER_DEPTH = 32
#: Most comparisons accepted in one filter.
MAX_FILTER_TERMS = 100
#: Most runs of wildcards (``*`` in GLOB, ``%`` in LIKE) accepted in one pattern.
MAX_PATTERN_WILDCARDS = 10

#: The escape character of every ``LIKE`` the filters emit.
VERSION_STATUSES = ("draft", "validating", "ready", "rejected", "archived")

_INT_LIMIT = 2**63 - 1


# --- AST -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """A literal: ``str``, ``int``, ``float`` or ``bool``, and where it starts in the filter."""

    value: str | int | float | bool
    position: int


@dataclass(frozen=True)
class Comparison:
    """``field op values``.

    ``op`` is one of ``= != < <= > >= IN, NOT IN, LIKE, NOT LIKE, GLOB, NOT GLOB, IS NULL,
    IS NOT NULL`` (``<>`` is read as ``!=``); ``values`` is empty for the ``IS`` forms and has
    one literal except for ``IN``.
    """

    field: str
    op: str
    values: tuple[Value, ...]
    position: int
    op_position: int

    @property
    def path(self) -> tuple[str, ...]:
        """The field split on dots: ``("metadata", "metrics", "auc")``."""
        return tuple(self.field.split("."))


@dataclass(frozen=True)
class And:
    """All of ``items`` (two or more)."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """Any of ``items`` (two or more)."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """The negation of ``item``; ``position`` is that of the ``NOT`` keyword."""

    item: Node
    position: int


Node = And | Or | Not | Comparison


class _FilterError(Exception):
    """A problem at a position; the public functions turn it into :class:`BadRequest`."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


def _bad_request(error: _FilterError, text: str) -> BadRequest:
    return BadRequest(
        error.message,
        code="invalid_filter",
        details={"position": error.position, "filter": text[:MAX_FILTER_LENGTH]},
    )


# --- tokenizer -----------------------------------------------------------------------------

_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "GLOB", "TRUE", "FALSE"})
# A field: an identifier, then optionally a dot and a tag key or metadata path.
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_.\-]*)?")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
# ASCII digits only: str.isdigit() is also true of superscripts and Arabic-Indic digits,
# which start no number here.
_DIGITS = frozenset("0123456789")
_OPERATORS = ("!=", "<>", "<=", ">=", "=", "<", ">")
_PUNCTUATION = {"(": "LPAREN", ")": "RPAREN", ",": "COMMA"}
_ESCAPABLE = frozenset("'\"\\")


@dataclass(frozen=True)
class _Token:
    #: FIELD, KEYWORD, STRING, NUMBER, OP, LPAREN, RPAREN, COMMA or END.
    kind: str
    value: Any
    position: int
    #: The token as written, for messages.
    text: str


def _describe(token: _Token) -> str:
    return "end of filter" if token.kind == "END" else repr(token.text)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char in _PUNCTUATION:
            tokens.append(_Token(_PUNCTUATION[char], char, i, char))
            i += 1
        elif char in "'\"":
            token = _read_string(text, i)
            tokens.append(token)
            i += len(token.text)
        elif char in _DIGITS or (char == "-" and text[i + 1 : i + 2] in _DIGITS):
            token = _read_number(text, i)
            tokens.append(token)
            i += len(token.text)
        elif (match := _WORD.match(text, i)) is not None:
            word = match.group()
            if "." not in word and word.upper() in _KEYWORDS:
                tokens.append(_Token("KEYWORD", word.upper(), i, word))
            else:
                tokens.append(_Token("FIELD", word, i, word))
            i = match.end()
        else:
            op = next((op for op in _OPERATORS if text.startswith(op, i)), None)
            if op is None:
                raise _FilterError(f"unexpected character {char!r} at position {i}", i)
            tokens.append(_Token("OP", "!=" if op == "<>" else op, i, op))
            i += len(op)
    tokens.append(_Token("END", None, n, ""))
    return tokens


def _read_string(text: str, start: int) -> _Token:
    quote = text[start]
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            return _Token("STRING", "".join(chars), start, text[start : i + 1])
        if char == "\\":
            escaped = text[i + 1 : i + 2]
            if escaped not in _ESCAPABLE or not escaped:
                shown = "\\" + escaped if escaped else "\\ at the end of the filter"
                raise _FilterError(
                    f"invalid escape {shown!r} at position {i}; inside quotes a backslash "
                    "may only escape ', \" or another backslash",
                    i,
                )
            chars.append(escaped)
            i += 2
            continue
        chars.append(char)
        i += 1
    raise _FilterError(
        f"unterminated string starting at position {start}: missing closing {quote}", start
    )


def _read_number(text: str, start: int) -> _Token:
    match = _NUMBER.match(text, start)
    assert match is not None  # the caller saw a digit
    end = match.end()
    if end < len(text) and (text[end].isalnum() or text[end] in "_."):
        raise _FilterError(f"invalid number at position {start}", start)
    written = match.group()
    value: int | float
    if match.group(1) or match.group(2):
        value = float(written)
        if not math.isfinite(value):
            raise _FilterError(f"number out of range at position {start}", start)
    else:
        value = int(written)
        if abs(value) > _INT_LIMIT:
            raise _FilterError(f"number out of range at position {start}", start)
    return _Token("NUMBER", value, start, written)


# --- parser --------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the token list; one method per grammar rule."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0
        self.terms = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "END":
            self.index += 1
        return token

    def accept_keyword(self, *keywords: str) -> _Token | None:
        token = self.peek()
        if token.kind == "KEYWORD" and token.value in keywords:
            return self.advance()
        return None

    def enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_FILTER_DEPTH:
            raise _FilterError(
                f"filter nested too deeply at position {token.position}: at most "
                f"{MAX_FILTER_DEPTH} levels of parentheses and NOT",
                token.position,
            )

    def parse(self) -> Node:
        if self.peek().kind == "END":
            raise _FilterError("empty filter at position 0", 0)
        node = self.or_expr()
        token = self.peek()
        if token.kind != "END":
            raise _FilterError(
                f"unexpected {_describe(token)} at position {token.position}; "
                "expected AND, OR or the end of the filter",
                token.position,
            )
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.accept_keyword("OR"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.accept_keyword("AND"):
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        token = self.accept_keyword("NOT")
        if token is None:
            return self.atom()
        self.enter(token)
        item = self.not_expr()
        self.depth -= 1
        return Not(item, token.position)

    def atom(self) -> Node:
        token = self.peek()
        if token.kind == "LPAREN":
            self.advance()
            self.enter(token)
            node = self.or_expr()
            closing = self.peek()
            if closing.kind != "RPAREN":
                raise _FilterError(
                    f"expected ')' at position {closing.position} to close the '(' at "
                    f"position {token.position}, found {_describe(closing)}",
                    closing.position,
                )
            self.advance()
            self.depth -= 1
            return node
        if token.kind == "FIELD":
            return self.comparison()
        raise _FilterError(
            f"expected a field name, NOT or '(' at position {token.position}, "
            f"found {_describe(token)}",
            token.position,
        )

    def comparison(self) -> Comparison:
        field = self.advance()
        self.terms += 1
        if self.terms > MAX_FILTER_TERMS:
            raise _FilterError(
                f"too many comparisons at position {field.position}: at most {MAX_FILTER_TERMS}",
                field.position,
            )
        token = self.advance()
        if token.kind == "OP":
            value = self.value(token)
            return Comparison(field.value, token.value, (value,), field.position, token.position)
        if token.kind == "KEYWORD" and token.value == "IS":
            negated = self.accept_keyword("NOT") is not None
            if self.accept_keyword("NULL") is None:
                found = self.peek()
                raise _FilterError(
                    f"expected NULL or NOT NULL after 'IS' at position {found.position}, "
                    f"found {_describe(found)}",
                    found.position,
                )
            op = "IS NULL" if not negated else "IS NOT NULL"
            return Comparison(field.value, op, (), field.position, token.position)
        negated = token.kind == "KEYWORD" and token.value == "NOT"
        keyword = self.advance() if negated else token
        if keyword.kind == "KEYWORD" and keyword.value == "IN":
            values = self.in_list(keyword)
            op = "NOT IN" if negated else "IN"
            return Comparison(field.value, op, values, field.position, token.position)
        if keyword.kind == "KEYWORD" and keyword.value in ("LIKE", "GLOB"):
            pattern = self.advance()
            if pattern.kind != "STRING":
                raise _FilterError(
                    f"expected a quoted pattern after '{keyword.value}' at position "
                    f"{pattern.position}, found {_describe(pattern)}",
                    pattern.position,
                )
            op = f"NOT {keyword.value}" if negated else keyword.value
            value = Value(pattern.value, pattern.position)
            return Comparison(field.value, op, (value,), field.position, token.position)
        if negated:
            raise _FilterError(
                f"expected IN, LIKE or GLOB after 'NOT' at position {keyword.position}, "
                f"found {_describe(keyword)}",
                keyword.position,
            )
        raise _FilterError(
            f"expected an operator (=, !=, <>, <, <=, >, >=, IN, NOT IN, LIKE, GLOB, IS) after "
            f"{field.value!r} at position {token.position}, found {_describe(token)}",
            token.position,
        )

    def in_list(self, keyword: _Token) -> tuple[Value, ...]:
        opening = self.advance()
        if opening.kind != "LPAREN":
            raise _FilterError(
                f"expected '(' after 'IN' at position {opening.position}, "
                f"found {_describe(opening)}",
                opening.position,
            )
        values = [self.value(keyword)]
        while True:
            token = self.advance()
            if token.kind == "RPAREN":
                return tuple(values)
            if token.kind != "COMMA":
                raise _FilterError(
                    f"expected ',' or ')' in the IN list at position {token.position}, "
                    f"found {_describe(token)}",
                    token.position,
                )
            values.append(self.value(keyword))

    def value(self, after: _Token) -> Value:
        token = self.advance()
        if token.kind in ("STRING", "NUMBER"):
            return Value(token.value, token.position)
        if token.kind == "KEYWORD" and token.value in ("TRUE", "FALSE"):
            return Value(token.value == "TRUE", token.position)
        where = f"after {after.text!r} at position {token.position}"
        if token.kind == "KEYWORD" and token.value == "NULL":
            raise _FilterError(
                f"unexpected NULL {where}; use IS NULL or IS NOT NULL to test for absence",
                token.position,
            )
        hint = ""
        if token.kind == "FIELD":
            hint = f"; quote text values, e.g. '{token.text}'"
        raise _FilterError(
            f"expected a value (a quoted string, a number, TRUE or FALSE) {where}, "
            f"found {_describe(token)}{hint}",
            token.position,
        )


def parse_filter(text: str) -> Node:
    """Parse a filter into its syntax tree, without checking fields against an entity.

    :raises BadRequest: (code ``invalid_filter``) on a syntax error, a filter longer than
        :data:`MAX_FILTER_LENGTH`, nested deeper than :data:`MAX_FILTER_DEPTH` or with more
        than :data:`MAX_FILTER_TERMS` comparisons; ``details`` has the ``position``.
    """
    try:
        return _parse(text)
    except _FilterError as error:
        raise _bad_request(error, text) from None


def _parse(text: str) -> Node:
    if len(text) > MAX_FILTER_LENGTH:
        raise _FilterError(
            f"filter too long: {len(text)} characters, at most {MAX_FILTER_LENGTH} "
            f"(position {MAX_FILTER_LENGTH})",
            MAX_FILTER_LENGTH,
        )
    nul = text.find("\x00")
    if nul >= 0:
        raise _FilterError(f"NUL character at position {nul}", nul)
    return _Parser(_tokenize(text)).parse()


# --- patterns and values -------------------------------------------------------------------


def _check_like_pattern(pattern: str, position: int) -> None:
    # A pattern ending in an unpaired escape is an error on PostgreSQL and matches nothing
    # elsewhere; reject it everywhere.
    trailing = len(pattern) - len(pattern.rstrip(LIKE_ESCAPE))
    if trailing % 2:
        raise _FilterError(
            f"LIKE pattern at position {position} ends with an unpaired escape character "
            "(a backslash); write \\\\\\\\ inside the quotes for a literal backslash",
            position,
        )


def _check_wildcards(pattern: str, position: int) -> None:
    """Refuse a ``LIKE`` pattern with more than :data:`MAX_PATTERN_WILDCARDS` runs of ``%``."""
    runs, previous, escaped = 0, "", False
    for char in pattern:
        if escaped:
            escaped, previous = False, ""
            continue
        if char == LIKE_ESCAPE:
            escaped = True
        elif char == "%" and previous != "%":
            runs += 1
        previous = char
    if runs > MAX_PATTERN_WILDCARDS:
        raise _FilterError(
            f"pattern at position {position} has {runs} runs of wildcards ('*' or '%'): at "
            f"most {MAX_PATTERN_WILDCARDS}",
            position,
        )


def _parse_timestamp(value: str, position: int) -> dt.datetime:
    parsed = parse_timestamp(value)
    if parsed is None:
        raise _FilterError(
            f"invalid timestamp {value!r} at position {position}; expected ISO-8601 such as "
            "'2026-01-01', '2026-01-01T12:00:00Z' or '2026-01-01T12:00:00+02:00'",
            position,
        )
    return parsed


# Converters check the literals of one comparison and turn them into Python values.
_Convert = Callable[[tuple[Value, ...], str], tuple[Any, ...]]


def _type_error(expected: str, value: Value, op: str) -> _FilterError:
    where = "in the IN list" if op.endswith("IN") else f"after '{op}'"
    return _FilterError(f"expected {expected} {where} at position {value.position}", value.position)


def _each(convert: Callable[[Value, str], Any]) -> _Convert:
    def convert_all(values: tuple[Value, ...], op: str) -> tuple[Any, ...]:
        return tuple(convert(value, op) for value in values)

    return convert_all


def _text(value: Value, op: str) -> str:
    if not isinstance(value.value, str):
        raise _type_error("a quoted string", value, op)
    return value.value


def _name(value: Value, op: str) -> str:
    return normalize_name(_text(value, op))


def _integer(value: Value, op: str) -> int:
    if isinstance(value.value, bool) or not isinstance(value.value, int):
        raise _type_error("an integer", value, op)
    return value.value


def _timestamp(value: Value, op: str) -> dt.datetime:
    if not isinstance(value.value, str):
        raise _type_error("a quoted ISO-8601 timestamp", value, op)
    return _parse_timestamp(value.value, value.position)


def _status(value: Value, op: str) -> str:
    status = _text(value, op)
    if status not in VERSION_STATUSES:
        raise _FilterError(
            f"invalid status {status!r} at position {value.position}; expected one of "
            + ", ".join(VERSION_STATUSES),
            value.position,
        )
    return status


def _json_literals(values: tuple[Value, ...], op: str) -> tuple[Any, ...]:
    """Literals compared with metadata: one type per comparison, booleans only with ``=``."""
    first = values[0] if values else None
    for value in values:
        literal = value.value
        if op.endswith(("LIKE", "GLOB")) and not isinstance(literal, str):
            raise _type_error("a quoted string", value, op)
        if isinstance(literal, bool) and op not in ("=", "!="):
            raise _FilterError(
                f"TRUE and FALSE only work with = and != (at position {value.position})",
                value.position,
            )
        if first is not None and isinstance(literal, str) != isinstance(first.value, str):
            raise _FilterError(
                f"mixed strings and numbers in the IN list at position {value.position}",
                value.position,
            )
    return tuple(value.value for value in values)


# --- JSON type test ------------------------------------------------------------------------


class _JsonKind(ColumnElement[bool]):
    """Whether the JSON value at ``path`` of ``column`` is of ``kind``.

    ``kind`` is ``number``, ``string``, ``true``, ``false`` or ``present`` (any value but
    JSON ``null``).  Always true or false, never NULL.  It guards the typed extraction
    (``as_float()`` and friends) so that a value of another type neither matches by accident
    (SQLite and MySQL turn ``'abc'`` into 0) nor fails the query (PostgreSQL rejects
    ``CAST('abc' AS FLOAT)``).
    """

    __visit_name__ = "modelreg_json_kind"
    # The compiled SQL depends on ``kind``, which is not a bound parameter: do not cache.
    inherit_cache = False
    type = sa.Boolean()

    def __init__(self, column: ColumnElement[Any], path: tuple[str, ...], kind: str) -> None:
        self.column = column
        self.path = path
        self.kind = kind

    @property
    def _from_objects(self) -> list[Any]:
        return self.column._from_objects


# The names each database's JSON type function gives, for each kind.
_JSON_KIND_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "sqlite": {
        "number": ("integer", "real"),
        "string": ("text",),
        "true": ("true",),
        "false": ("false",),
        "null": ("null",),
    },
    "postgresql": {
        "number": ("number",),
        "string": ("string",),
        "true": ("true",),
        "false": ("false",),
        "null": ("null",),
    },
    "mysql": {
        "number": ("INTEGER", "UNSIGNED INTEGER", "DOUBLE", "DECIMAL"),
        "string": ("STRING",),
        "true": ("true",),
        "false": ("false",),
        "null": ("NULL",),
    },
}


def _kind_test(
    compiler: SQLCompiler, kind_expr: ColumnElement[Any], element: _JsonKind, names: str, **kw: Any
) -> str:
    table = _JSON_KIND_NAMES[names]
    (null,) = table["null"]
    kind_expr = sa.func.coalesce(kind_expr, null)
    test = kind_expr != null if element.kind == "present" else kind_expr.in_(table[element.kind])
    # Parenthesized: SQLAlchemy may append "= 1" or prefix NOT to a boolean element.
    return f"({compiler.process(test, **kw)})"


@compiles(_JsonKind)
def _compile_json_kind(element: _JsonKind, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite's json_type() (also the rendering for dialects without a specific one).  The
    # path is a bound parameter; its segments are restricted to [A-Za-z0-9_-], so quoting
    # each with "" is enough.
    path = "$" + "".join(f'."{segment}"' for segment in element.path)
    kind_expr = sa.func.json_type(element.column, sa.literal(path, sa.String))
    return _kind_test(compiler, kind_expr, element, "sqlite", **kw)


@compiles(_JsonKind, "postgresql")
def _compile_json_kind_postgresql(element: _JsonKind, compiler: SQLCompiler, **kw: Any) -> str:
    value = element.column[element.path]
    impl = element.column.type.dialect_impl(compiler.dialect)
    typeof = sa.func.jsonb_typeof if isinstance(impl, postgresql.JSONB) else sa.func.json_typeof
    json_type = typeof(value)
    kind_expr = sa.case(
        (json_type == "boolean", element.column[element.path].as_string()), else_=json_type
    )
    return _kind_test(compiler, kind_expr, element, "postgresql", **kw)


@compiles(_JsonKind, "mysql")
@compiles(_JsonKind, "mariadb")
def _compile_json_kind_mysql(element: _JsonKind, compiler: SQLCompiler, **kw: Any) -> str:
    value = element.column[element.path]
    json_type = sa.func.json_type(value)
    kind_expr = sa.case((json_type == "BOOLEAN", sa.func.json_unquote(value)), else_=json_type)
    return _kind_test(compiler, kind_expr, element, "mysql", **kw)


# --- field handlers ------------------------------------------------------------------------

# Builders get positive operators only: = < <= > >= IN LIKE "IS NOT NULL" (GLOB arrives as
# LIKE); negated operators are compiled as NOT of the positive one.
_Build = Callable[[str, str, tuple[Any, ...]], ColumnElement[bool]]

_NEGATIONS = {
    "!=": "=",
    "NOT IN": "IN",
    "NOT LIKE": "LIKE",
    "NOT GLOB": "GLOB",
    "IS NULL": "IS NOT NULL",
}
_SHOWN_OPERATORS = {
    "=": "=, !=",
    "IN": "IN, NOT IN",
    "LIKE": "LIKE, NOT LIKE",
    "GLOB": "GLOB, NOT GLOB",
    "IS NOT NULL": "IS NULL, IS NOT NULL",
}
_COMPARATORS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

_OPERATOR_ORDER = ("=", "<", "<=", ">", ">=", "IN", "LIKE", "GLOB", "IS NOT NULL")

_EQUALITY = frozenset({"=", "IN"})
_ORDERING = frozenset({"=", "<", "<=", ">", ">="})
_PATTERNS = frozenset({"LIKE", "GLOB"})
_PRESENCE = frozenset({"IS NOT NULL"})

_TAG_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_JSON_SEGMENT = re.compile(r"[A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class _Field:
    """How one field of an entity is compiled.

    :param ops: positive operators accepted (their negations are accepted too).
    :param convert: checks and converts the literals.
    :param build: ``(suffix, positive operator, converted values) -> predicate``; ``suffix``
        is the tag key or metadata path after the field's first dot.
    :param suffix: ``None`` for plain fields, else what follows the dot (for messages).
    """

    ops: frozenset[str]
    convert: _Convert
    build: _Build
    suffix: str | None = None


def _column(
    column: Any, op: str, values: tuple[Any, ...], *, nullable: bool = False
) -> ColumnElement[bool]:
    """``column op values`` for a positive operator; never NULL when ``nullable``."""
    if op == "IS NOT NULL":
        return column.is_not(None)
    if op == "IN":
        expr = column.in_(values)
    elif op == "LIKE":
        expr = column.like(values[0], escape=LIKE_ESCAPE)
    else:
        expr = _COMPARATORS[op](column, values[0])
    return sa.and_(column.is_not(None), expr) if nullable else expr


def _plain(column: Any, *, nullable: bool = False) -> _Build:
    def build(suffix: str, op: str, values: tuple[Any, ...]) -> ColumnElement[bool]:
        return _column(column, op, values, nullable=nullable)

    return build


def _exists(outer: Any, link: Any, column: Any, op: str, values: tuple[Any, ...]) -> Any:
    """EXISTS a row related to ``outer`` by ``link`` whose ``column`` satisfies ``op``."""
    conditions = [link]
    if op != "IS NOT NULL":
        conditions.append(_column(column, op, values))
    return sa.exists().where(*conditions).correlate(outer)


def _tags(outer: Any, tag: Any, owner_id: Any) -> _Build:
    def build(key: str, op: str, values: tuple[Any, ...]) -> ColumnElement[bool]:
        link = sa.and_(owner_id == outer.id, tag.key == key)
        return _exists(outer, link, tag.value, op, values)

    return build


def _related(outer: Any, link: Any, column: Any) -> _Build:
    def build(suffix: str, op: str, values: tuple[Any, ...]) -> ColumnElement[bool]:
        return _exists(outer, link, column, op, values)

    return build


def _metadata(path: str, op: str, values: tuple[Any, ...]) -> ColumnElement[bool]:
    column = Version.metadata_.expression
    segments = tuple(path.split("."))
    if op == "IS NOT NULL":
        return _JsonKind(column, segments, "present")
    sample = values[0]
    if isinstance(sample, bool):  # only "=" gets here
        return _JsonKind(column, segments, "true" if sample else "false")
    if isinstance(sample, str):
        kind, extracted = "string", column[segments].as_string()
    else:
        kind, extracted = "number", column[segments].as_float()
        values = tuple(float(value) for value in values)
    # CASE, not AND: PostgreSQL does not promise to evaluate AND's operands in order, and
    # the cast must not see a value of another type.
    return sa.case(
        (_JsonKind(column, segments, kind), _column(extracted, op, values)),
        else_=sa.false(),
    )


_NAME = _each(_name)
_TEXT = _each(_text)

MODEL_FIELDS: dict[str, _Field] = {
    "name": _Field(_ORDERING | _EQUALITY | _PATTERNS, _NAME, _plain(Model.normalized_name)),
    "description": _Field(frozenset({"="}) | _PATTERNS, _TEXT, _plain(Model.description)),
    "tag": _Field(
        _EQUALITY | _PATTERNS | _PRESENCE,
        _TEXT,
        _tags(Model, ModelTag, ModelTag.model_id),
        suffix="key",
    ),
    "alias": _Field(
        _EQUALITY | _PATTERNS | _PRESENCE,
        _TEXT,
        _related(Model, Alias.model_id == Model.id, Alias.name),
    ),
    "created": _Field(_ORDERING, _each(_timestamp), _plain(Model.created_at)),
    "updated": _Field(_ORDERING, _each(_timestamp), _plain(Model.updated_at)),
}

VERSION_FIELDS: dict[str, _Field] = {
    "number": _Field(_ORDERING | _EQUALITY, _each(_integer), _plain(Version.number)),
    "status": _Field(_EQUALITY, _each(_status), _plain(Version.status)),
    "description": _Field(frozenset({"="}) | _PATTERNS, _TEXT, _plain(Version.description)),
    "digest": _Field(_EQUALITY | _PRESENCE, _TEXT, _plain(Version.digest, nullable=True)),
    "created": _Field(_ORDERING, _each(_timestamp), _plain(Version.created_at)),
    "updated": _Field(_ORDERING, _each(_timestamp), _plain(Version.updated_at)),
    "tag": _Field(
        _EQUALITY | _PATTERNS | _PRESENCE,
        _TEXT,
        _tags(Version, VersionTag, VersionTag.version_id),
        suffix="key",
    ),
    "alias": _Field(
        _EQUALITY | _PATTERNS | _PRESENCE,
        _TEXT,
        _related(Version, Alias.version_id == Version.id, Alias.name),
    ),
    "metadata": _Field(
        _ORDERING | _EQUALITY | _PATTERNS | _PRESENCE, _json_literals, _metadata, suffix="path"
    ),
    "model": _Field(
        _EQUALITY | _PATTERNS,
        _NAME,
        _related(Version, Model.id == Version.model_id, Model.normalized_name),
    ),
}


# --- compiler ------------------------------------------------------------------------------


def _known_fields(fields: dict[str, _Field]) -> str:
    shown = (f"{name}.<{field.suffix}>" if field.suffix else name for name, field in fields.items())
    return ", ".join(sorted(shown))


def _resolve(node: Comparison, fields: dict[str, _Field]) -> tuple[str, _Field, str]:
    """The field's label (for messages), its handler and its suffix (tag key or path)."""
    head, dot, suffix = node.field.partition(".")
    field = fields.get(head.lower())
    if field is None or (field.suffix is None and dot):
        raise _FilterError(
            f"unknown field {node.field!r} at position {node.position}; known fields: "
            + _known_fields(fields),
            node.position,
        )
    label = head.lower()
    if field.suffix is None:
        return label, field, ""
    suffix_position = node.position + len(head) + 1
    if field.suffix == "key":
        if not _TAG_KEY.fullmatch(suffix):
            raise _FilterError(
                f"expected a tag key after '{head}.' at position {suffix_position}: letters, "
                "digits, _, . and -, not starting with . or -",
                suffix_position,
            )
    elif not all(_JSON_SEGMENT.fullmatch(segment) for segment in suffix.split(".")):
        raise _FilterError(
            f"expected a metadata path after '{head}.' at position {suffix_position}: keys of "
            "letters, digits, _ and - separated by single dots",
            suffix_position,
        )
    return f"{label}.<{field.suffix}>", field, suffix


def _compile_comparison(node: Comparison, fields: dict[str, _Field]) -> ColumnElement[bool]:
    label, field, suffix = _resolve(node, fields)
    positive = _NEGATIONS.get(node.op, node.op)
    if positive not in field.ops:
        shown = sorted(field.ops, key=_OPERATOR_ORDER.index)
        raise _FilterError(
            f"operator {node.op} is not supported for field {label!r} at position "
            f"{node.op_position}; supported: "
            + ", ".join(_SHOWN_OPERATORS.get(op, op) for op in shown),
            node.op_position,
        )
    values = field.convert(node.values, node.op)
    if positive == "GLOB":
        positive, values = "LIKE", (glob_to_like(values[0]),)
    elif positive == "LIKE":
        _check_like_pattern(values[0], node.values[0].position)
    if positive == "LIKE":
        _check_wildcards(values[0], node.values[0].position)
    predicate = field.build(suffix, positive, values)
    return sa.not_(predicate) if node.op in _NEGATIONS else predicate


def _compile(node: Node, fields: dict[str, _Field]) -> ColumnElement[bool]:
    if isinstance(node, And):
        return sa.and_(*(_compile(item, fields) for item in node.items))
    if isinstance(node, Or):
        return sa.or_(*(_compile(item, fields) for item in node.items))
    if isinstance(node, Not):
        return sa.not_(_compile(node.item, fields))
    return _compile_comparison(node, fields)


def _filter(text: str, fields: dict[str, _Field]) -> ColumnElement[bool]:
    try:
        return _compile(_parse(text), fields)
    except _FilterError as error:
        raise _bad_request(error, text) from None


def model_filter(text: str) -> ColumnElement[bool]:
    """Compile a filter over models, for ``select(Model).where(model_filter(text))``.

    :raises BadRequest: (code ``invalid_filter``) on a syntax error, an unknown field, an
        operator or value the field does not take, or a filter over the limits.
    """
    return _filter(text, MODEL_FIELDS)


def version_filter(text: str) -> ColumnElement[bool]:
    """Compile a filter over versions, for ``select(Version).where(version_filter(text))``.

    The model is reached through ``Version.model_id`` in a correlated subquery, so the
    statement may also join ``Model`` (or eager-load it) without changing the result.

    :raises BadRequest: (code ``invalid_filter``) on a syntax error, an unknown field, an
        operator or value the field does not take, or a filter over the limits.
    """
    return _filter(text, VERSION_FIELDS)
