"""Small helpers shared by the functional tests."""

from __future__ import annotations

from typing import Any

API = "/api/v1"


def create_model(app, name: str = "fraud-detector", **body: Any) -> dict[str, Any]:
    return app.post_json(f"{API}/models", {"name": name, **body}, status=201).json


def create_version(app, model: str = "fraud-detector", **body: Any) -> dict[str, Any]:
    return app.post_json(f"{API}/models/{model}/versions", body, status=201).json


def add_file(app, model: str, number: int, path: str = "model.bin",
             data: bytes = b"weights") -> dict[str, Any]:
    """Upload a file to a draft (one PUT); returns the file's JSON."""
    return app.put(f"{API}/models/{model}/versions/{number}/files/{path}", data,
                   headers={"Content-Type": "application/octet-stream"}).json


def ready_version(app, model: str = "fraud-detector", **body: Any) -> dict[str, Any]:
    number = create_version(app, model, **body)["number"]
    add_file(app, model, number)
    version = app.post(f"{API}/models/{model}/versions/{number}/finalize", status=200).json
    assert version["status"] == "ready", version
    return version


def error_code(response) -> str:
    body = response.json
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["message"], body
    return body["error"]["code"]
