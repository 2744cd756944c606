"""The OpenAPI document describes every route the app serves."""

from __future__ import annotations

import re

from pyramid.interfaces import IRoutesMapper


def test_document_is_openapi_31_and_lists_every_route(testapp, modelreg_app):
    document = testapp.get("/api/v1/openapi.json").json
    assert document["openapi"].startswith("3.1")
    mapper = modelreg_app.registry.getUtility(IRoutesMapper)
    documented = set(document["paths"])
    for route in mapper.get_routes():
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.pattern)  # {path:.*} -> {path}
        assert path in documented, f"route {route.name} ({route.pattern}) is undocumented"


def test_every_operation_declares_a_permission_and_errors(testapp):
    document = testapp.get("/api/v1/openapi.json").json
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert operation["x-permission"], (method, path)
            assert operation["summary"], (method, path)
            for status in ("400", "404", "500"):
                assert status in operation["responses"], (method, path, status)


def test_request_schemas_refuse_unknown_fields(testapp):
    document = testapp.get("/api/v1/openapi.json").json
    schemas = document["components"]["schemas"]
    assert schemas["ModelCreate"]["additionalProperties"] is False
