"""Hostile input is refused cleanly: a 4xx JSON error, no state change, nothing outside the store.

Every test runs against the app without anonymous access, as a global admin (so that each
request reaches its handler: nothing here is refused for lack of permission), over a world of
one model (``fraud-detector``: tag ``team``, ready version 1 with alias ``champion``, draft
version 2), a principal ``alice`` with a token, a grant and a group ``team-a``, seeded once
for the module.  After each batch of hostile requests the whole database (every row of every
table, but the record of failed authentications) and the files of the test session are what
they were before; the few tests that change something on purpose undo it.

* **Path segments**: every path parameter of every operation of the OpenAPI document (so a
  route added later is covered without touching this file) gets traversal in every form —
  ``..``, ``%2e%2e``, double-encoded ``%252e%252e``, encoded slashes, backslashes raw and
  ``%5c``, overlong UTF-8 for ``.`` — NUL and other control characters, CR LF, invalid UTF-8
  and very long segments.  Each must answer a documented 4xx with the JSON error shape; a path
  that is not UTF-8 (``%c0%af``) is ``400 invalid_encoding`` and still gets its access-log line.
* **Query parameters** of every operation: invalid UTF-8 and NUL are ``400``; a huge value is
  a 4xx, quickly; ``page_size`` is refused (``422``), never clamped, when out of range, and
  ``400`` when not an integer; forged page tokens (a lone surrogate in one too) are ``400``;
  pathological filters (deep parentheses, many wildcards, 100,000 characters) are ``400
  invalid_filter``, quickly.
* **JSON bodies** of every operation that takes one: too large is ``413``; not UTF-8, not an
  object, a key twice, ``NaN``, out-of-range numbers, truncated, or nested deeper than 32
  levels (100,000 levels too) is ``400 invalid_json``; another media type than JSON is
  ``415``; NUL characters and unpaired surrogates are ``422 invalid_body``.
* **Names**: model names that differ only by case, by Unicode compatibility forms (fullwidth,
  ligatures, the Kelvin sign), by surrounding or non-breaking spaces are the same name (``409
  model_exists`` against an existing model); Cyrillic look-alikes, zero-width characters and
  other non-ASCII names are ``422 invalid_name``.
* **Headers**: a 100 KB token is ``401``; a 100 KB unknown header changes nothing; ``Range``
  and ``Content-Range`` positions of thousands of digits are ``416`` and ``400``.

Framing, slow clients and Waitress's own limits are tested on a real server in
``test_http_framing.py``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import webtest

from document_helpers import load_document, operations
from helpers import API, error_code
from modelreg import paging
from modelreg.openapi import DEFAULT_MAX_JSON_BODY, MAX_JSON_DEPTH
from modelreg.registry.filters import MAX_PATTERN_WILDCARDS
from modelreg.testing import clear_database
from security_helpers import (
    add_principal,
    bearer,
    public_id,
    registry_service,
    security_service,
    seed_model,
)
from state_helpers import database_state, reflect

#: Every hostile request must be answered within this many seconds: generous for a loaded
#: machine, far below what a pathological pattern or an unbounded parse would take.
QUICK = 10.0


# ------------------------------------------------------------------------ the document


DOCUMENT = load_document()
OPERATIONS = operations()


def _params(operation: dict[str, Any], where: str) -> list[str]:
    return [p["name"] for p in operation["parameters"] if p["in"] == where]


def _json_body(operation: dict[str, Any]) -> bool:
    content = (operation.get("requestBody") or {}).get("content", {})
    return "application/json" in content


PATH_CASES = [
    pytest.param(method, path, name, id=f"{method} {path} {{{name}}}")
    for method, path, operation in OPERATIONS
    for name in _params(operation, "path")
]
QUERY_CASES = [
    pytest.param(method, path, name, id=f"{method} {path} ?{name}")
    for method, path, operation in OPERATIONS
    for name in _params(operation, "query")
]
BODY_CASES = [
    pytest.param(method, path, id=f"{method} {path}")
    for method, path, operation in OPERATIONS
    if _json_body(operation)
]
PAGED_CASES = [
    pytest.param(method, path, id=f"{method} {path}")
    for method, path, operation in OPERATIONS
    if "page_size" in _params(operation, "query")
]
#: GET operations whose every path parameter the world below has a value for.
KNOWN_PARAMS = {"model", "version", "alias", "key", "principal", "group", "token", "grant"}
GET_CASES = [
    pytest.param(path, id=path)
    for method, path, operation in OPERATIONS
    if method == "GET" and set(_params(operation, "path")) <= KNOWN_PARAMS
]


def _example(schema: dict[str, Any], depth: int = 0) -> Any:
    """A small valid instance of a request schema: required properties only."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _example(DOCUMENT["components"]["schemas"][name], depth)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _example(options[0], depth)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        required = schema.get("required", [])
        return {name: _example(sub, depth + 1)
                for name, sub in schema.get("properties", {}).items() if name in required}
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    return None


# ------------------------------------------------------------------------------ world


@dataclass
class World:
    """The seeded registry, the admin's headers and a value for each known path parameter."""

    app: webtest.TestApp
    checker: Any
    headers: dict[str, str]
    values: dict[str, str]

    def url(self, template: str, **override: str) -> str:
        """``template`` with every ``{param}`` filled: ``override`` first, else a valid value
        (``x`` for parameters of routes this file does not know)."""
        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in override:
                return override[name]
            return quote(self.values.get(name, "x"), safe="")
        return re.sub(r"\{(\w+)\}", fill, template)

    def body(self, method: str, template: str) -> tuple[bytes | None, str | None]:
        """A valid request body of the operation, and its media type (``None``: no body)."""
        operation = DOCUMENT["paths"][template][method.lower()]
        content = (operation.get("requestBody") or {}).get("content", {})
        if "application/json" in content:
            value = _example(content["application/json"]["schema"])
            return json.dumps(value).encode(), "application/json"
        if content:  # a raw body (file contents): a few bytes of the declared type
            return b"hostile", next(iter(content))
        return None, None

    def send(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> webtest.TestResponse:
        """Send a request as the admin; fail if it took longer than :data:`QUICK`."""
        all_headers = {**self.headers, **(headers or {})}
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        started = time.monotonic()
        response = self.app.request(url, method=method, body=body, headers=all_headers,
                                    expect_errors=True)
        elapsed = time.monotonic() - started
        assert elapsed < QUICK, f"{method} {url[:200]} took {elapsed:.1f} s"
        return response

    def refusal(self, response: webtest.TestResponse) -> str | None:
        """What is wrong with ``response`` as the refusal of a hostile request, if anything:
        it must be a 4xx (never 401/403: the caller is an admin) with the JSON error shape,
        no traceback, and a status the OpenAPI document lists for the operation."""
        status = response.status_int
        if not 400 <= status < 500 or status in (401, 403):
            return f"answered {response.status}: {response.body[:300]!r}"
        if response.content_type != "application/json":
            return f"answered {response.content_type!r}, not JSON"
        try:
            code = error_code(response)
        except (AssertionError, ValueError) as exc:
            return f"not the error shape: {exc}"
        if "Traceback" in response.text or "site-packages" in response.text:
            return "the error leaks internals"
        try:
            path = response.request.path_info
        except UnicodeDecodeError:  # refused before routing; nothing to look up
            return None if code == "invalid_encoding" else f"{code} for undecodable path"
        try:
            self.checker.check(response.request.method, path, response)
        except AssertionError as exc:
            return f"breaks the OpenAPI document: {exc}"
        return None


def _files(roots: list[Path]) -> set[str]:
    found = set()
    for root in roots:
        for directory, _, files in os.walk(root):
            found.add(directory)
            found.update(os.path.join(directory, name) for name in files)
    return found


@pytest.fixture(scope="module")
def snapshot(secure_wsgi_app, tmp_path_factory) -> Callable[[], tuple[Any, ...]]:
    """The state hostile requests must not change: every row, and every file of the test
    session (the blob store lives there) and of the working directory's top level."""
    engine = secure_wsgi_app.registry["db_engine"]
    metadata = reflect(engine)
    roots = [tmp_path_factory.getbasetemp()]
    store = secure_wsgi_app.registry.settings.get("modelreg.storage.local.path") or \
        os.environ.get("MODELREG_STORAGE_LOCAL_PATH")
    if store:
        roots.append(Path(store).parent)

    def take() -> tuple[Any, ...]:
        return database_state(engine, metadata), _files(roots), sorted(os.listdir("."))

    return take


@pytest.fixture(scope="module")
def world(secure_wsgi_app, openapi_checker) -> Iterator[World]:
    """The seeded registry of the module's docstring, emptied after the module: tests must
    leave it as they found it."""
    wsgi = secure_wsgi_app
    admin = add_principal(wsgi, "root", admin=True)
    alice = add_principal(wsgi, "alice", grants=[("fraud-*", "read")], scopes=["read"])
    with security_service(wsgi) as security:
        security.create_group("team-a")
        security.add_member("team-a", "alice")
        (grant,), _ = security.list_grants(principal="alice")
        grant_id = grant.id
    seed_model(wsgi)
    values = {
        "model": "fraud-detector", "version": "1", "alias": "champion", "key": "team",
        "principal": "alice", "group": "team-a", "token": public_id(alice),
        "grant": str(grant_id),
    }
    app = webtest.TestApp(wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    yield World(app, openapi_checker, bearer(admin), values)
    clear_database(wsgi.registry["db_engine"])


def _refuse_all(world: World, requests: list[tuple[str, str, str, bytes | None, str | None]],
                expect: Callable[[webtest.TestResponse], str | None] | None = None) -> None:
    """Send ``(label, method, url, body, content type)`` requests; fail listing every one that
    was not refused cleanly (or, with ``expect``, not as expected)."""
    failures = []
    for label, method, url, body, content_type in requests:
        response = world.send(method, url, body, content_type)
        problem = world.refusal(response)
        if problem is None and expect is not None:
            problem = expect(response)
        if problem:
            failures.append(f"{label}: {method} {url[:120]} {problem}")
    assert not failures, "\n".join(failures)


def expect(code: str, status: int | None = None) -> Callable[[webtest.TestResponse], str | None]:
    """A check for :func:`_refuse_all`: the error has ``code`` (and ``status``)."""
    def check(response: webtest.TestResponse) -> str | None:
        got = (response.status_int, error_code(response))
        if got[1] != code or (status is not None and got[0] != status):
            return f"answered {got[0]} {got[1]}, expected {status or ''} {code}"
        return None
    return check


# ------------------------------------------------------------------------ path segments

#: (label, the segment as written in the URL).
HOSTILE_SEGMENTS = [
    ("dot-dot", ".."),
    ("dot", "."),
    ("encoded dot-dot", "%2e%2e"),
    ("encoded dot-dot, upper case", "%2E%2E"),
    ("double-encoded dot-dot", "%252e%252e"),
    ("traversal with encoded slashes", "..%2f..%2f..%2fetc%2fpasswd"),
    ("traversal with double-encoded slashes", "..%252f..%252fetc%252fpasswd"),
    ("backslashes", "..\\..\\windows\\win.ini"),
    ("encoded backslashes", "..%5c..%5cwindows%5cwin.ini"),
    ("overlong UTF-8 dots", "%c0%ae%c0%ae"),
    ("absolute path", "%2fetc%2fpasswd"),
    ("NUL", "%00"),
    ("NUL inside", "fraud-detector%00.json"),
    ("control character", "a%01b"),
    ("escape sequence", "%1b%5b31m"),
    ("DEL", "a%7f"),
    ("CR LF header injection", "x%0d%0aSet-Cookie:%20a=b"),
    ("invalid UTF-8", "%ff%fe"),
    ("unpaired surrogate in UTF-8", "%ed%a0%80"),
    ("very long segment", "a" * 10_000),
    ("very long encoded dots", "%2e" * 3_000),
    ("spaces around dot-dot", "%20..%20"),
]


@pytest.mark.parametrize(("method", "template", "param"), PATH_CASES)
def test_hostile_path_segments_are_refused(world, snapshot, method, template, param):
    before = snapshot()
    body, content_type = world.body(method, template)
    _refuse_all(world, [
        (label, method, world.url(template, **{param: segment}), body, content_type)
        for label, segment in HOSTILE_SEGMENTS
    ])
    assert snapshot() == before


@pytest.mark.parametrize("template", GET_CASES)
def test_the_world_paths_are_found(world, template):
    """The values the hostile segments replace are valid: each GET answers 200 with them, so
    the refusals above come from the hostile segment alone."""
    response = world.send("GET", world.url(template))
    assert response.status_int == 200, response.text
    world.checker.check("GET", response.request.path_info, response)


def test_dot_segments_are_never_resolved(world, snapshot):
    """``/models/x/..`` is not ``/models``: dot segments are names, and no such name exists."""
    before = snapshot()
    for url in (f"{API}/models/x/..", f"{API}/models/fraud-detector/versions/..",
                f"{API}/models/fraud-detector/versions/1/..%2f..%2f..",
                f"{API}/models/fraud-detector/aliases/..%2f..%2fversions"):
        for method in ("GET", "DELETE"):
            response = world.send(method, url)
            assert world.refusal(response) is None, (method, url, response.text)
    assert snapshot() == before
    assert world.send("GET", f"{API}/models/fraud-detector").status_int == 200


# ------------------------------------------------------------------------------- query


@pytest.mark.parametrize(("method", "template", "param"), QUERY_CASES)
def test_hostile_query_values_are_refused(world, snapshot, method, template, param):
    before = snapshot()
    url = world.url(template)

    for label, value, check in [
        ("invalid UTF-8", "%ff%fe", expect("invalid_encoding", 400)),
        ("unpaired surrogate", "%ed%a0%80", expect("invalid_encoding", 400)),
        ("overlong UTF-8", "%c0%ae", expect("invalid_encoding", 400)),
        ("NUL", "a%00b", expect("invalid_query", 400)),
        ("huge value", "x" * 60_000, None),
        ("huge encoded value", "%41" * 20_000, None),
    ]:
        _refuse_all(world, [(label, method, f"{url}?{param}={value}", None, None)], check)
    assert snapshot() == before


@pytest.mark.parametrize(("method", "template"), PAGED_CASES)
def test_page_sizes_out_of_range_are_refused_not_clamped(world, snapshot, method, template):
    before = snapshot()
    url = world.url(template)

    for value, status in [(str(10**9), 422), ("0", 422), ("-5", 422), ("9" * 5000, 422),
                          ("many", 400), ("1e3", 400), ("1.5", 400), ("%ef%bc%91", 400),
                          ("+5", 400), ("%205", 400), ("", 400)]:
        _refuse_all(world, [(value[:20], method, f"{url}?page_size={value}", None, None)],
                    expect("invalid_page_size", status))
    assert world.send(method, f"{url}?page_size=1000").status_int == 200
    assert snapshot() == before


def _forged(key: list[Any], query: str = "anything") -> str:
    raw = json.dumps({"k": key, "q": query}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(("method", "template"), PAGED_CASES)
def test_forged_page_tokens_are_refused(world, snapshot, method, template):
    before = snapshot()
    url = world.url(template)
    tokens = ["garbage", "=" * 10, "a" * 10_000, base64.b64encode(b"[1,2]").decode(),
              _forged([1, 2])]
    check = expect("invalid_page_token")
    _refuse_all(world, [(token[:20], method, f"{url}?page_token={quote(token, safe='%')}",
                         None, None) for token in tokens], check)
    assert snapshot() == before


def test_forged_page_tokens_with_the_right_fingerprint_are_refused(world, snapshot):
    """Tokens are not signed: one of the right query with values of the wrong type (a dict, a
    list, a huge integer, a boolean, a string for a timestamp or an id) is a 400, never an
    error of the database."""
    before = snapshot()
    models = paging.fingerprint("models", None, "name", "False")
    created = paging.fingerprint("models", None, "created", "False")
    history = paging.fingerprint("alias_history", "fraud-detector", "champion")
    principals = paging.fingerprint("principals")
    requests = []
    for key in ([{"a": 1}, 1], [[1], 1], ["a", 10**30], [None, None], [True, 1], ["a", "b"],
                ["a", 1.5], ["a", {"t": "2026-01-01"}], ["\ud800", 1], ["a\udfff", 1]):
        requests.append((repr(key), "GET", f"{API}/models?page_token={_forged(key, models)}",
                         None, None))
    for key in (["abc", 1], [{"t": "2026-01-01T00:00:00+05:00"}, 1], [{"t": "garbage"}, 1],
                [{"t": 5}, 1]):
        requests.append((repr(key), "GET",
                         f"{API}/models?order_by=created&page_token={_forged(key, created)}",
                         None, None))
    for key in (["x", "x"], [1, 10**30], [1, {"a": 1}]):
        requests.append((repr(key), "GET", f"{API}/models/fraud-detector/aliases/champion/"
                         f"history?page_token={_forged(key, history)}", None, None))
        requests.append((repr(key), "GET",
                         f"{API}/admin/principals?page_token={_forged(key, principals)}",
                         None, None))
    _refuse_all(world, requests, expect("invalid_page_token"))
    # The same tokens with values of the right types are taken: the fingerprints are right.
    for url in (f"{API}/models?page_token={_forged(['a', 0], models)}",
                f"{API}/models?order_by=created&page_token="
                f"{_forged([{'t': '2000-01-01T00:00:00'}, 0], created)}",
                f"{API}/models/fraud-detector/aliases/champion/history?page_token="
                f"{_forged([10**6, 10**6], history)}",
                f"{API}/admin/principals?page_token={_forged(['a', 0], principals)}"):
        assert world.send("GET", url).status_int == 200, url
    assert snapshot() == before


PATHOLOGICAL_FILTERS = [
    ("100,000 characters", "name = '" + "x" * 100_000 + "'"),
    ("deep parentheses", "(" * 900 + "name = 'a'" + ")" * 900),
    ("unbalanced parentheses", "(" * 1900),
    ("33 levels", "(" * 33 + "name = 'a'" + ")" * 33),
    ("NOT chain", "NOT " * 400 + "name = 'a'"),
    ("many wildcards", "name GLOB '" + "*a" * 900 + "*b'"),
    ("wildcards over the limit", "name GLOB '" + "*a" * (MAX_PATTERN_WILDCARDS + 1) + "'"),
    ("LIKE wildcards over the limit", "name LIKE '" + "%a" * (MAX_PATTERN_WILDCARDS + 1) + "'"),
    ("many comparisons", " OR ".join(["name = 'a'"] * 120)),
    ("IN list past the length limit", "name IN (" + ",".join(["'a'"] * 600) + ")"),
    ("Arabic-Indic digit", "number = \u0661"),
    ("superscript digit", "number = \u00b2"),
    ("huge number", "number = " + "9" * 500),
    ("timestamp out of range after the offset", "created > '0001-01-01T00:00:00+14:00'"),
    ("timestamp past year 9999", "created > '9999-12-31T23:59:59-14:00'"),
    ("unterminated string", "name = '" + "\\'" * 900),
]


@pytest.mark.parametrize("path", ["/models", "/models/fraud-detector/versions"])
def test_pathological_filters_are_refused_quickly(world, snapshot, path):
    before = snapshot()
    _refuse_all(world, [(label, "GET", f"{API}{path}?filter={quote(text)}", None, None)
                        for label, text in PATHOLOGICAL_FILTERS], expect("invalid_filter", 400))
    assert snapshot() == before


def test_patterns_at_the_wildcard_limit_are_answered_quickly(world):
    pattern = "*a" * MAX_PATTERN_WILDCARDS
    response = world.send("GET", f"{API}/models?filter={quote(f'name GLOB {pattern!r}')}")
    assert response.status_int == 200, response.text


def test_huge_audit_filters_are_refused(world, snapshot):
    before = snapshot()
    _refuse_all(world, [
        (name, "GET", f"{API}/audit?{name}={'x' * 60_000}", None, None)
        for name in ("actor", "action", "target", "target_type", "model", "since", "until")
    ])
    for since in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "99999-01-01"):
        response = world.send("GET", f"{API}/audit?since={quote(since)}")
        assert response.status_int == 400 and error_code(response) == "invalid_timestamp"
    assert snapshot() == before


# -------------------------------------------------------------------------------- bodies


def _nested(depth: int) -> bytes:
    """An object whose ``x`` nests arrays so that the body is ``depth`` levels deep."""
    return b'{"x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


#: (label, body, content type, status, code).
HOSTILE_BODIES = [
    ("100,000 levels of [", b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "application/json", 400, "invalid_json"),
    ("100,000 unclosed [", b"[" * 100_000, "application/json", 400, "invalid_json"),
    (f"{MAX_JSON_DEPTH + 1} levels", _nested(MAX_JSON_DEPTH + 1), "application/json", 400,
     "invalid_json"),
    ("invalid UTF-8", b'{"x": "\xff\xfe"}', "application/json", 400, "invalid_json"),
    ("UTF-8 encoded surrogate", b'{"x": "\xed\xa0\x80"}', "application/json", 400,
     "invalid_json"),
    ("UTF-16", '{"x": "y"}'.encode("utf-16"), "application/json", 400, "invalid_json"),
    ("duplicate keys", b'{"x": 1, "x": 2}', "application/json", 400, "invalid_json"),
    ("nested duplicate keys", b'{"x": {"a": 1, "a": 1}}', "application/json", 400,
     "invalid_json"),
    ("NaN", b'{"x": NaN}', "application/json", 400, "invalid_json"),
    ("Infinity", b'{"x": -Infinity}', "application/json", 400, "invalid_json"),
    ("number out of range", b'{"x": 1e400}', "application/json", 400, "invalid_json"),
    ("integer of 5000 digits", b'{"x": ' + b"9" * 5000 + b"}", "application/json", 400,
     "invalid_json"),
    ("an array", b"[1, 2]", "application/json", 400, "invalid_json"),
    ("a string", b'"x"', "application/json", 400, "invalid_json"),
    ("null", b"null", "application/json", 400, "invalid_json"),
    ("truncated", b'{"x": ', "application/json", 400, "invalid_json"),
    ("trailing garbage", b'{"x": 1} {"y": 2}', "application/json", 400, "invalid_json"),
    ("text/plain", b'{"x": 1}', "text/plain", 415, "unsupported_media_type"),
    ("a form", b"x=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("multipart", b'--b\r\n\r\n{"x": 1}\r\n--b--', "multipart/form-data; boundary=b", 415,
     "unsupported_media_type"),
    ("no media type", b'{"x": 1}', "", 415, "unsupported_media_type"),
    ("XML", b"<x/>", "application/xml", 415, "unsupported_media_type"),
    ("JSON in UTF-16", b'{"x": 1}', "application/json; charset=utf-16", 415,
     "unsupported_media_type"),
    ("NUL in a string", b'{"x": "a\\u0000b"}', "application/json", 422, "invalid_body"),
    ("NUL in a key", b'{"a\\u0000": 1}', "application/json", 422, "invalid_body"),
    ("unpaired surrogate", b'{"x": "\\ud800"}', "application/json", 422, "invalid_body"),
    ("unpaired surrogate deep down", b'{"x": [{"y": ["\\udfff"]}]}', "application/json", 422,
     "invalid_body"),
]


@pytest.mark.parametrize(("method", "template"), BODY_CASES)
def test_hostile_json_bodies_are_refused(world, snapshot, method, template):
    before = snapshot()
    location = None
    if "{upload}" in template:  # a session that exists: the body is what is judged
        opened = world.send("POST", f"{API}/models/fraud-detector/versions/2/uploads",
                            json.dumps({"path": "hostile.bin", "size": 10,
                                        "part_size": 8 * 1024 * 1024}).encode(),
                            "application/json")
        assert opened.status_int == 201, opened.text
        location = opened.json["location"]
    url = world.url(template, **({"upload": location.rsplit("/", 1)[1], "number": "1"}
                                 if location else {}))
    limit = int(world.app.app.registry.settings.get("modelreg.api.max_json_body",
                                                    DEFAULT_MAX_JSON_BODY))
    too_large = json.dumps({"x": "y" * limit}).encode()
    cases = [*HOSTILE_BODIES,
             ("over max_json_body", too_large, "application/json", 413, "payload_too_large")]
    failures = []
    for label, body, content_type, status, code in cases:
        response = world.send(method, url, body, content_type)
        problem = world.refusal(response)
        if problem is None and (response.status_int, error_code(response)) != (status, code):
            problem = f"answered {response.status_int} {error_code(response)}"
        if problem:
            failures.append(f"{label}: {problem}")
    if location is not None:
        assert world.send("DELETE", location).status_int == 204
    assert not failures, "\n".join(failures)
    assert snapshot() == before


def test_nesting_up_to_the_limit_is_accepted(world):
    metadata: Any = 1
    for _ in range(MAX_JSON_DEPTH - 1):  # the body is the first level
        metadata = {"a": metadata}
    url = f"{API}/models/fraud-detector/versions"
    response = world.send("POST", url, json.dumps({"metadata": metadata}).encode(),
                          "application/json")
    assert response.status_int == 201, response.text
    number = response.json["number"]
    try:
        assert world.send("GET", f"{url}/{number}").json["metadata"] == metadata
        deeper = json.dumps({"metadata": {"a": metadata}}).encode()
        response = world.send("POST", url, deeper, "application/json")
        assert response.status_int == 400 and error_code(response) == "invalid_json"
    finally:
        assert world.send("DELETE", f"{url}/{number}").status_int == 204


def test_numbers_out_of_range_are_refused(world, snapshot):
    before = snapshot()
    base = f"{API}/models/fraud-detector"
    cases = [
        ("PUT", f"{base}/aliases/next", {"version": 10**30}),
        ("PUT", f"{base}/aliases/next", {"version": 2**31}),
        ("POST", f"{base}/versions", {"lineage": {"parent_version": 10**30}}),
        ("POST", f"{API}/admin/tokens", {"principal": "alice", "expires_in_days": 10**30}),
    ]
    for method, url, body in cases:
        response = world.send(method, url, json.dumps(body).encode(), "application/json")
        assert world.refusal(response) is None, (url, response.text)
        assert response.status_int == 422, (url, response.text)
    for ref in ("9" * 30, "9" * 5000, "2147483648", "\u00b2", "\u0661", "\uff11", "0", "-1"):
        for method in ("GET", "DELETE", "PATCH"):
            body = b"{}" if method == "PATCH" else None
            response = world.send(method, f"{base}/versions/{quote(ref)}", body,
                                  "application/json" if body else None)
            assert world.refusal(response) is None, (method, ref, response.text)
    for grant in ("9" * 30, "9" * 5000, "\u00b2", "-1"):
        response = world.send("GET", f"{API}/admin/grants/{quote(grant)}")
        assert response.status_int == 404, response.text
    assert snapshot() == before


def test_huge_range_positions_are_416(world, snapshot):
    """``Range`` positions of thousands of digits (past Python's 4,300-digit ``int()`` limit)
    or past 2⁶³ name no byte of any file: ``416`` in JSON.  Leading zeros do not count."""
    before = snapshot()
    url = f"{API}/models/fraud-detector/versions/1/files/model.bin"
    huge = "9" * 5000
    for value in (f"bytes={huge}-", f"bytes={huge}-{huge}1", f"bytes=0-{huge}",
                  f"bytes=-{huge}", f"bytes=0-{2**63}"):
        response = world.send("GET", url, headers={"Range": value})
        assert world.refusal(response) is None, (value[:20], response.text)
        assert (response.status_int, error_code(response)) == (416, "range_not_satisfiable")
        assert response.headers["Content-Range"] == f"bytes */{len(b'weights')}"
    for value in (f"bytes=2-{'0' * 5000}9", f"bytes=0-{2**63 - 1}", "bytes=-100"):
        response = world.send("GET", url, headers={"Range": value})
        assert response.status_int == 206, (value[:20], response.text)
        assert response.body == b"weights"[2 if value.startswith("bytes=2") else 0:]
    assert snapshot() == before


def test_huge_content_range_positions_are_400(world, snapshot):
    before = snapshot()
    opened = world.send("POST", f"{API}/models/fraud-detector/versions/2/uploads",
                        json.dumps({"path": "chunked.bin"}).encode(), "application/json")
    assert opened.status_int == 201, opened.text
    location = opened.json["location"]
    huge = "9" * 5000
    try:
        for value in (f"bytes 0-{huge}", f"bytes {huge}-{huge}9", f"{huge}-{huge}",
                      f"0-{huge}", f"bytes {'0' * 5000}-{huge}"):
            response = world.send("PATCH", location, b"abc", "application/octet-stream",
                                  headers={"Content-Range": value})
            assert world.refusal(response) is None, (value[:20], response.text)
            assert (response.status_int, error_code(response)) == (
                400, "invalid_content_range"), (value[:20], response.text)
        assert world.send("GET", location).json["offset"] == 0
    finally:
        assert world.send("DELETE", location).status_int == 204
    assert snapshot() == before


def test_paths_that_are_not_utf8_are_400_and_logged(world, snapshot, caplog):
    """An overlong ``/`` (``%c0%af``) and other bytes that are not UTF-8 in the path: ``400
    invalid_encoding``, and the access log writes the line with the bytes as sent."""
    caplog.set_level(logging.INFO, logger="modelreg.access")
    before = snapshot()
    for url in (f"{API}/models/%c0%af", f"{API}/%c0%af", "/%ff%fe?x=1",
                f"{API}/models/fraud-detector/versions/1/files/a%c0%afb"):
        caplog.clear()
        response = world.send("GET", url)
        assert (response.status_int, error_code(response)) == (400, "invalid_encoding"), url
        (record,) = [r for r in caplog.records if r.name == "modelreg.access"]
        assert record.status == 400
        assert record.path.lower() == url.lower()
    assert snapshot() == before


# --------------------------------------------------------------------------------- names


def _create(world: World, name: str) -> webtest.TestResponse:
    return world.send("POST", f"{API}/models", json.dumps({"name": name}).encode(),
                      "application/json")


def _fullwidth(name: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in name)


def _bold(name: str) -> str:
    """Mathematical bold letters (U+1D41A on), which NFKC maps back to ASCII."""
    return "".join(chr(0x1D41A + ord(c) - ord("a")) if "a" <= c <= "z" else c for c in name)


#: Ways of writing a name that normalize (NFKC, trimmed, case-folded) to the same name.
SAME_NAME: list[tuple[str, Callable[[str], str]]] = [
    ("upper case", str.upper),
    ("mixed case", str.title),
    ("leading space", lambda n: " " + n),
    ("trailing space", lambda n: n + " "),
    ("trailing no-break space", lambda n: n + "\u00a0"),
    ("trailing ideographic space", lambda n: n + "\u3000"),
    ("fullwidth", _fullwidth),
    ("fullwidth first letter", lambda n: _fullwidth(n[0]) + n[1:]),
    ("mathematical bold letters", _bold),
    ("ligature ff", lambda n: n.replace("ff", "\ufb00")),
    ("Kelvin sign for k", lambda n: n.replace("k", "\u212a")),
]
SAME_NAME_CASES = [pytest.param(how, id=label) for label, how in SAME_NAME]
#: Names that look like ``fraud-detector`` but are not valid names at all.
INVALID_LOOKALIKES = [
    ("Cyrillic a", "fr\u0430ud-detector"),
    ("Cyrillic e and o", "fraud-d\u0435t\u0435ct\u043er"),
    ("Greek omicron", "fraud-detect\u03bfr"),
    ("zero-width joiner", "fraud\u200d-detector"),
    ("zero-width space", "fraud-\u200bdetector"),
    ("soft hyphen", "fraud\u00addetector"),
    ("Unicode hyphen", "fraud\u2010detector"),
    ("right-to-left override", "fraud-\u202erotceted"),
    ("combining dot", "fraud-detector\u0307"),
    ("tab", "fraud-detector\t"),
    ("newline", "fraud-detector\n"),
    ("no-break space inside", "fraud\u00a0detector"),
]


@pytest.mark.parametrize("how", SAME_NAME_CASES)
def test_names_equal_once_normalized_are_taken(world, snapshot, how):
    """Against ``kick-off-model`` (which has a k and an ff to write otherwise): 409 on create
    and on rename, and a look-up by that spelling finds the model under its own name."""
    with registry_service(world.app.app) as registry:
        registry.create_model("kick-off-model", "", {})
        registry.create_model("other", "", {})
    name = how("kick-off-model")
    assert name != "kick-off-model"
    try:
        before = snapshot()
        response = _create(world, name)
        assert world.refusal(response) is None, response.text
        assert response.status_int == 409 and error_code(response) == "model_exists"
        assert response.json["error"]["details"]["existing"] == "kick-off-model"
        response = world.send("PATCH", f"{API}/models/other",
                              json.dumps({"name": name}).encode(), "application/json")
        assert response.status_int == 409 and error_code(response) == "model_exists"
        response = world.send("GET", f"{API}/models/{quote(name, safe='')}")
        assert response.status_int == 200 and response.json["name"] == "kick-off-model"
        assert snapshot() == before
    finally:
        with registry_service(world.app.app) as registry:
            registry.delete_model("kick-off-model")
            registry.delete_model("other")


@pytest.mark.parametrize("how", SAME_NAME_CASES[2:])
def test_other_spellings_of_a_free_name_are_invalid(world, snapshot, how):
    """Without a model of that normalized name, any spelling but plain ASCII (case aside) is
    a 422: the normalized form is for comparing, never a name given."""
    before = snapshot()
    response = _create(world, how("kick-off-model"))
    assert world.refusal(response) is None, response.text
    assert response.status_int == 422 and error_code(response) == "invalid_name", response.text
    assert snapshot() == before


@pytest.mark.parametrize(("label", "name"), INVALID_LOOKALIKES)
def test_lookalikes_are_other_names(world, snapshot, label, name):
    """A look-alike is refused as a new name and names no existing model."""
    before = snapshot()
    response = _create(world, name)
    assert response.status_int == 422 and error_code(response) == "invalid_name", response.text
    response = world.send("GET", f"{API}/models/{quote(name, safe='')}")
    assert response.status_int == 404, response.text
    assert snapshot() == before


def test_names_differing_only_by_case_are_one_model(world, snapshot):
    with registry_service(world.app.app) as registry:
        registry.create_model("Model-A", "", {})
    try:
        before = snapshot()
        for name in ("model-a", "MODEL-A", "mODEL-a"):
            response = _create(world, name)
            assert response.status_int == 409 and error_code(response) == "model_exists"
            assert response.json["error"]["details"]["existing"] == "Model-A"
        glob = quote("name GLOB 'model*'")
        listing = world.send("GET", f"{API}/models?filter={glob}")
        assert [m["name"] for m in listing.json["models"]] == ["Model-A"]
        assert snapshot() == before
    finally:
        with registry_service(world.app.app) as registry:
            registry.delete_model("Model-A")


def test_oversized_and_garbled_credentials_are_401(world, snapshot):
    before = snapshot()
    for value in ("Bearer mr_" + "x" * 100_000, "Bearer mr_\xff\xfe_\x00", "Basic " + "A" * 50_000):
        response = world.send("GET", f"{API}/models", headers={"Authorization": value})
        assert response.status_int == 401, response.text
        assert response.content_type == "application/json"
        assert error_code(response)
    assert snapshot() == before


def test_oversized_unknown_headers_change_nothing(world, snapshot):
    before = snapshot()
    response = world.send("GET", f"{API}/models", headers={"X-Filler": "x" * 100_000})
    assert response.status_int == 200
    response = world.send("POST", f"{API}/models", b'{"name": "fraud-detector"}',
                          "application/json", headers={"X-Filler": "\xff" * 10_000})
    assert response.status_int == 409
    assert snapshot() == before
