"""The app's OpenAPI document at collection time, to parametrize tests over its operations."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import webtest

from modelreg.testing import make_app


@functools.cache
def load_document() -> dict[str, Any]:
    """``/api/v1/openapi.json`` of an app with the core's plugins (built once, no database
    needed: the document is made from the declared operations)."""
    with tempfile.TemporaryDirectory(prefix="modelreg-openapi-") as tmp:
        app = make_app({
            "sqlalchemy.url": f"sqlite:///{Path(tmp) / 'unused.sqlite'}",
            "modelreg.storage.local.path": str(Path(tmp) / "blobs"),
            "modelreg.auth.anonymous": "none",
        })
        try:
            return webtest.TestApp(app).get("/api/v1/openapi.json").json
        finally:
            app.registry["db_engine"].dispose()


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    """``(METHOD, path template, operation)`` of every operation of the document."""
    return [
        (method.upper(), path, operation)
        for path, methods in load_document()["paths"].items()
        for method, operation in methods.items()
    ]
