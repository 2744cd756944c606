"""Checking responses against the app's own OpenAPI document.

In a module of its own (not in ``conftest.py``) so that test modules can import
:class:`CheckedTestApp`: several ``conftest`` modules share one name in this repository.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import webtest


class OpenAPIChecker:
    """Validates responses against the app's own OpenAPI document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.routes = []
        for path, methods in document["paths"].items():
            multi = {p["name"] for op in methods.values() for p in op["parameters"]
                     if p.get("x-multi-segment")}

            def param(match: re.Match[str], multi: set[str] = multi) -> str:
                return r"[\s\S]*" if match.group(1) in multi else "[^/]+"

            regex = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", param, re.escape(path)) + "$")
            self.routes.append((regex, methods))
        self.seen: set[tuple[str, str, int]] = set()

    def operation(self, path: str, method: str) -> dict[str, Any] | None:
        for regex, methods in self.routes:
            if regex.match(path):
                return methods.get(method.lower())
        return None

    def check(self, method: str, path: str, response: webtest.TestResponse) -> None:
        if method == "HEAD":
            return
        operation = self.operation(path, method)
        if operation is None:
            # Unknown routes and methods answer with the error document.
            assert response.status_int in (404, 405), (method, path, response.status)
            error_schema = {"$ref": "#/components/schemas/ErrorOut"}
            jsonschema.validate(response.json, self._schema(error_schema))
            return
        documented = operation["responses"].get(str(response.status_int))
        assert documented is not None, (
            f"{method} {path} answered {response.status_int}, which the OpenAPI document "
            f"does not list ({sorted(operation['responses'])})"
        )
        self.seen.add((operation["operationId"], method, response.status_int))
        content = documented.get("content")
        if content is None:
            assert not response.body, f"{method} {path}: undocumented body"
            return
        if "application/json" not in content:  # a binary body (a file): any media type
            return
        assert response.content_type == "application/json", response.content_type
        jsonschema.validate(response.json, self._schema(content["application/json"]["schema"]))

    def _schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {**schema, "components": self.document["components"]}


class CheckedTestApp(webtest.TestApp):
    """A WebTest app whose every response is checked against the OpenAPI document."""

    checker: OpenAPIChecker

    def do_request(self, req, status=None, expect_errors=None):
        response = super().do_request(req, status=status, expect_errors=expect_errors)
        self.checker.check(req.method, req.path_info, response)
        return response
