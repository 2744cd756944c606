"""A front-end plugin built on ``modelreg.api`` alone (see docs/plugins.md).

It serves a small protocol of its own under ``/x`` with its own error shape (``{"error":
"..."}`` and ``X-Error-Code``, as the Hugging Face Hub answers), and does what the web UI, the
MLflow and the Hub front-ends need: create models and drafts, stream a file in through an
upload session in numbered parts, link another by digest, finalize, move an alias, search,
keep a blob of its own from garbage collection, and send files with Range.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

from pyramid.response import Response

from modelreg import api

PREFIX = "/x"
OWNER = "x-plugin"
PART = 64 * 1024


def _error(request: Any, error: api.ApiError) -> Response:
    response = Response(json_body={"error": error.message}, status=error.status)
    response.headers["X-Error-Code"] = error.code
    return response


@api.api_view("x.models", "POST", permission=api.WRITE, status=201, tags=["x"], renderer="json")
def create(request: Any) -> dict[str, Any]:
    """Create a model and its first draft."""
    body = api.read_json_body(request)
    registry = api.registry_of(request)
    model = registry.create_model(body["name"], tags={"source": "x"})
    version = registry.create_version(model["name"], metadata={"framework": "onnx"})
    request.response.status_code = 201
    return {"model": model["name"], "version": version["number"]}


@api.api_view("x.file", "PUT", permission=api.WRITE, status=201, tags=["x"], renderer="json")
def upload(request: Any) -> dict[str, Any]:
    """Stream the body in through an upload session, in parts of :data:`PART` bytes."""
    registry = api.registry_of(request)
    md = request.matchdict
    size = request.content_length
    session = registry.open_upload(md["model"], md["version"], md["path"], size=size,
                                   part_size=PART)
    whole = hashlib.sha256()
    number, left = 1, size
    while left:
        chunk = request.body_file.read(min(PART, left))
        whole.update(chunk)
        left -= len(chunk)
        registry.put_part(session["id"], number, io.BytesIO(chunk), len(chunk),
                          sha256=hashlib.sha256(chunk).hexdigest())
        number += 1
    file, created = registry.complete_upload(session["id"], whole.hexdigest())
    request.response.status_code = 201 if created else 200
    return {"file": file, "created": created, "parts": number - 1}


@api.api_view("x.link", "POST", permission=api.WRITE, status=201, tags=["x"], renderer="json")
def link(request: Any) -> dict[str, Any]:
    """Link a file by digest."""
    body = api.read_json_body(request)
    md = request.matchdict
    file, created = api.registry_of(request).link_file(md["model"], md["version"],
                                                       body["path"], body["digest"])
    request.response.status_code = 201 if created else 200
    return {"file": file, "created": created}


@api.api_view("x.finalize", "POST", permission=api.WRITE, tags=["x"], renderer="json")
def finalize(request: Any) -> dict[str, Any]:
    """Finalize a draft and point ``prod`` at it."""
    md = request.matchdict
    registry = api.registry_of(request)
    version = registry.finalize_version(md["model"], md["version"])
    alias, _created = registry.set_alias(md["model"], "prod", version["number"])
    return {"status": version["status"], "alias": alias}


@api.api_view("x.search", "GET", permission=api.READ, tags=["x"], renderer="json")
def search(request: Any) -> dict[str, Any]:
    """Search models with the registry's filter language."""
    page = api.registry_of(request).search_models(filter=request.GET.get("filter"),
                                                  page_size=request.GET.get("page_size"))
    return {"names": [m["name"] for m in page["models"]], "next": page["next_page_token"]}


@api.api_view("x.download", "GET", permission=api.READ,
              response_media="application/octet-stream", tags=["x"])
def download(request: Any) -> Response:
    """Send a file of a version by alias (Range, ETag...)."""
    md = request.matchdict
    return api.registry_of(request).download(md["model"], "prod", md["path"])


@api.api_view("x.artifact", "PUT", permission=api.WRITE, status=201, tags=["x"], renderer="json")
def put_artifact(request: Any) -> dict[str, Any]:
    """Store an artifact no version references, held by this plugin."""
    key = request.matchdict["key"]
    info = api.registry_of(request).store_blob(request.body_file, hold=(OWNER, key))
    request.response.status_code = 201
    return {"digest": f"sha256:{info.sha256}", "size": info.size}


@api.api_view("x.artifact", "POST", permission=api.WRITE, tags=["x"], renderer="json")
def hold_artifact(request: Any) -> dict[str, Any]:
    """Hold a blob the registry already has under a key."""
    body = api.read_json_body(request)
    api.registry_of(request).hold_blob(OWNER, request.matchdict["key"], body["digest"])
    return {"held": api.registry_of(request).held_blobs(OWNER)}


@api.api_view("x.artifact", "DELETE", permission=api.WRITE, status=204, tags=["x"])
def delete_artifact(request: Any) -> Response:
    """Release an artifact."""
    if not api.registry_of(request).release_blob(OWNER, request.matchdict["key"]):
        raise api.NotFound("no such artifact", code="artifact_not_found")
    return Response(status=204)


@api.hookimpl
def modelreg_pyramid_configure(config: Any) -> None:
    """Routes under :data:`PREFIX`, answering errors in the plugin's own shape."""
    config.add_route("x.models", PREFIX + "/models")
    base = PREFIX + "/models/{model}/versions/{version}"
    config.add_route("x.file", base + "/files/{path}")
    config.add_route("x.link", base + "/links")
    config.add_route("x.finalize", base + "/finalize")
    config.add_route("x.search", PREFIX + "/search")
    config.add_route("x.download", PREFIX + "/models/{model}/prod/{path}")
    config.add_route("x.artifact", PREFIX + "/artifacts/{key}")
    api.add_streaming_view(config, "x.file", "PUT")
    api.add_streaming_view(config, "x.artifact", "PUT")
    api.add_error_shape(config, PREFIX, _error)
    config.scan(__name__)
