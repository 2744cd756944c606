"""MLflow's wire conventions: its error shape and codes, request parameters, timestamps,
page tokens and its search filter language (``name LIKE 'fraud%' AND tags.team = 'x'``)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from pyramid.request import Request
from pyramid.response import Response

from modelreg.api import ApiError, read_json_body

#: MLflow's error codes with the HTTP status its server answers them with
#: (``mlflow/protos/databricks.proto`` and ``mlflow.exceptions`` in the MLflow client).
STATUS = {
    "INVALID_PARAMETER_VALUE": 400,
    "BAD_REQUEST": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "INVALID_STATE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "REQUEST_LIMIT_EXCEEDED": 429,
    "INTERNAL_ERROR": 500,
    "NOT_IMPLEMENTED": 501,
    "TEMPORARILY_UNAVAILABLE": 503,
}


class MlflowError(ApiError):
    """An error in MLflow's terms: ``error_code`` (``RESOURCE_DOES_NOT_EXIST``...) and the
    HTTP status MLflow answers it with."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message, code=error_code.lower(), status=STATUS[error_code])
        self.error_code = error_code


def invalid(message: str) -> MlflowError:
    """``INVALID_PARAMETER_VALUE`` (400)."""
    return MlflowError("INVALID_PARAMETER_VALUE", message)


def missing(message: str) -> MlflowError:
    """``RESOURCE_DOES_NOT_EXIST`` (404)."""
    return MlflowError("RESOURCE_DOES_NOT_EXIST", message)


def error_code_of(error: ApiError) -> str:
    """The MLflow error code for an error of the core or of this plugin."""
    if isinstance(error, MlflowError):
        return error.error_code
    status, code = error.status, error.code
    if status == 404:
        return "ENDPOINT_NOT_FOUND" if code in ("not_found", "no_route") else \
            "RESOURCE_DOES_NOT_EXIST"
    if status == 409:
        return "RESOURCE_ALREADY_EXISTS" if code.endswith("_exists") else "INVALID_STATE"
    if status == 401:
        return "UNAUTHENTICATED"
    if status == 403:
        return "PERMISSION_DENIED"
    if status == 429:
        return "REQUEST_LIMIT_EXCEEDED"
    if status == 503:
        return "TEMPORARILY_UNAVAILABLE"
    if status >= 500:
        return "INTERNAL_ERROR"
    return "INVALID_PARAMETER_VALUE"


def render_error(request: Request, error: ApiError) -> Response:
    """An error as MLflow's server answers it: ``{"error_code", "message"}``, its status.

    A 413 keeps its status (the client then reports it without retrying)."""
    code = error_code_of(error)
    status = error.status if error.status == 413 else STATUS[code]
    message = error.message
    if not isinstance(error, MlflowError) and error.code:
        message = f"{message} ({error.code})"
    response = Response(json_body={"error_code": code, "message": message}, status=status,
                        charset="utf-8")
    response.content_type = "application/json"
    return response


# ---------------------------------------------------------------------------- requests


def params(request: Request) -> dict[str, Any]:
    """The request's parameters: the query string (a repeated key as a list) and, for a
    request with a body, its JSON object."""
    values: dict[str, Any] = {}
    for key in request.GET:
        found = request.GET.getall(key)
        values[key] = found if len(found) > 1 else found[0]
    if request.method != "GET" and request.content_length:
        values.update(read_json_body(request))
    return values


def required(values: dict[str, Any], name: str) -> Any:
    """A required parameter (``INVALID_PARAMETER_VALUE`` as MLflow words it)."""
    value = values.get(name)
    if value is None or value == "":
        raise invalid(f"Missing value for required parameter '{name}'. See the API docs "
                      "for more information about request parameters.")
    return value


def listed(value: Any) -> list[Any]:
    """A parameter that may be given once or repeated, as a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def now_ms() -> int:
    """Milliseconds since the epoch, MLflow's timestamps."""
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def iso_ms(value: str | None) -> int | None:
    """An ISO 8601 timestamp of the core (``…Z``) in milliseconds since the epoch."""
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(parsed.timestamp() * 1000)


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """``{key: value}`` as MLflow's ``[{"key", "value"}]``."""
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]


def page(items: list[Any], values: dict[str, Any], *, default: int = 100,
         maximum: int = 1000) -> tuple[list[Any], str | None]:
    """A page of ``items`` by ``max_results`` and ``page_token`` (an offset, opaque)."""
    try:
        given = values.get("max_results")
        size = default if given in (None, "") else int(given)
    except (TypeError, ValueError):
        raise invalid("max_results must be a positive integer") from None
    if not 0 < size <= maximum:
        raise invalid(f"Invalid value for max_results: it must be between 1 and {maximum}")
    start = 0
    token = values.get("page_token")
    if token:
        try:
            start = int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
        except (ValueError, KeyError, TypeError):
            raise invalid("Invalid page token") from None
    chunk = items[start:start + size]
    more = start + size < len(items)
    next_token = base64.urlsafe_b64encode(
        json.dumps({"offset": start + size}).encode()).decode() if more else None
    return chunk, next_token


# ------------------------------------------------------------------------------ filters

_TOKEN = re.compile(r"""\s*(?:
    (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op>!=|<=|>=|=|<|>)
  | (?P<word>(?:[A-Za-z_]\w*|`[^`]*`)(?:\.(?:\w+|`[^`]*`))*)
  | (?P<paren>[(),])
)""", re.VERBOSE)

Clause = tuple[str, str, Any]


def parse_filter(text: str | None) -> list[Clause]:
    """MLflow's search filter: comparisons joined by ``AND``, each ``<key> <op> <value>``
    with ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``LIKE``, ``ILIKE``, ``IN (...)``,
    ``NOT IN (...)``; keys like ``name``, ``tags.<key>`` (or ``tags.`key```)."""
    if not text or not text.strip():
        return []
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise invalid(f"Invalid filter '{text}': cannot parse at '{text[position:]}'")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    clauses: list[Clause] = []
    index = 0

    def take() -> tuple[str, str]:
        nonlocal index
        if index >= len(tokens):
            raise invalid(f"Invalid filter '{text}': it ends too early")
        index += 1
        return tokens[index - 1]

    while index < len(tokens):
        kind, key = take()
        if kind != "word":
            raise invalid(f"Invalid filter '{text}': expected a key, got {key!r}")
        kind, op = take()
        if kind == "word" and op.upper() == "NOT":
            _kind, nxt = take()
            op = "NOT " + nxt
        op = op.upper()
        if op in ("IN", "NOT IN"):
            if take() != ("paren", "("):
                raise invalid(f"Invalid filter '{text}': IN needs a list in parentheses")
            value: Any = []
            while True:
                kind, item = take()
                if (kind, item) == ("paren", ")"):
                    break
                if (kind, item) == ("paren", ","):
                    continue
                value.append(_literal(kind, item, text))
        elif op in ("=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE"):
            value = _literal(*take(), text)
        else:
            raise invalid(f"Invalid filter '{text}': unknown comparator {op!r}")
        clauses.append((_key(key), op, value))
        if index < len(tokens):
            kind, word = take()
            if kind != "word" or word.upper() != "AND":
                raise invalid(f"Invalid filter '{text}': comparisons are joined by AND")
    return clauses


def _key(word: str) -> str:
    word = word.strip()
    if word.startswith("`") and word.endswith("`"):
        word = word[1:-1]
    head, _, rest = word.partition(".")
    if rest:
        if rest.startswith("`") and rest.endswith("`"):
            rest = rest[1:-1]
        return f"{head.lower()}.{rest}"
    return word.lower()


def _literal(kind: str, token: str, text: str) -> Any:
    if kind == "string":
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    if kind == "number":
        return float(token) if "." in token else int(token)
    raise invalid(f"Invalid filter '{text}': expected a value, got {token!r}")


def _like(pattern: str, value: str, *, fold: bool) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if fold else re.DOTALL) \
        is not None


def compare(actual: Any, op: str, expected: Any) -> bool:
    """Whether ``actual <op> expected`` holds (a missing value matches only ``!=``)."""
    if actual is None:
        return op in ("!=", "NOT IN")
    if isinstance(expected, (int, float)) and not isinstance(actual, (int, float)):
        try:
            actual = float(actual)
        except (TypeError, ValueError):
            return False
    if isinstance(expected, list):
        found = str(actual) in [str(item) for item in expected]
        return found if op == "IN" else not found
    if op == "LIKE":
        return _like(str(expected), str(actual), fold=False)
    if op == "ILIKE":
        return _like(str(expected), str(actual), fold=True)
    if op in ("=", "!="):
        if isinstance(expected, (int, float)):
            equal = float(actual) == float(expected)
        else:
            equal = str(actual) == str(expected)
        return equal if op == "=" else not equal
    try:
        return {"<": actual < expected, "<=": actual <= expected,
                ">": actual > expected, ">=": actual >= expected}[op]
    except TypeError:
        return False


def matches(clauses: Iterable[Clause], lookup: Callable[[str], Any]) -> bool:
    """Whether every clause holds for the values ``lookup(key)`` gives."""
    return all(compare(lookup(key), op, value) for key, op, value in clauses)


def order(items: list[dict[str, Any]], order_by: Iterable[str],
          field: Callable[[dict[str, Any], str], Any], default: list[str]) -> None:
    """Sort ``items`` in place by MLflow's ``order_by`` (``"name ASC"``,
    ``"last_updated_timestamp DESC"``...), the last key first."""
    keys = [str(o) for o in order_by if o] or default
    for clause in reversed(keys):
        parts = clause.split()
        if not parts or len(parts) > 2 or (len(parts) == 2
                                           and parts[1].upper() not in ("ASC", "DESC")):
            raise invalid(f"Invalid order_by clause '{clause}'")
        name = parts[0]
        descending = len(parts) == 2 and parts[1].upper() == "DESC"
        items.sort(key=lambda item: _sortable(field(item, name)), reverse=descending)


def _sortable(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))
