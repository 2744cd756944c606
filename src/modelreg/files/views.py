"""REST views of files and upload sessions (``/api/v1``).

``PUT`` of a file and the chunks and completion of an upload session stream their body to the
blob store: they are marked with :func:`modelreg.db.add_streaming_view` (never retried, the
request's session only reads) and leave writing to the services: the upload service owns
the transactions of an upload (:meth:`.uploads.UploadService.put_file`); views open none.
"""

from __future__ import annotations

import re
from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from ..db import add_streaming_view
from ..errors import ApiError, BadRequest, Conflict, PayloadTooLarge
from ..interfaces import MAX_PARTS
from ..metrics import metered
from ..names import DIGEST_PREFIX
from ..openapi import Param, api_view, parse_body
from ..permissions import READ, WRITE
from ..policy import ARCHIVED, check_upload
from ..registry.services import RegistryService
from ..security.access import Level
from ..security.policy import ModelContext, denial, readable_models, root_factory, security_policy
from . import direct, schemas
from .body import body_stream
from .download import _HUGE, _position, send_blob
from .paths import check_path
from .services import (
    FileService,
    client_digest,
    file_json,
    max_put_size,
    media_type,
    parse_hex_digest,
    same_digest,
    upload_json,
    upload_not_found,
)
from .uploads import UploadService, UploadSnapshot

BINARY = "application/octet-stream"
_CONTENT_RANGE = re.compile(r"(?:bytes )?(\d+)-(\d+)(?:/(\d+|\*))?")


# --------------------------------------------------------------------------- contexts


def file_context(request: Request) -> ModelContext:
    """The context of the file routes: the model, once the file path is known to be valid."""
    check_path(request.matchdict["path"])
    return root_factory(request)


class UploadContext(ModelContext):
    """The context of ``/api/v1/uploads/{id}``: the model of the session's version.

    Authorization is decided on the session as stored (its owner, its version's model),
    never on anything the request sends.
    """

    __slots__ = ("number", "upload")

    def __init__(self, model: str, upload: Any, number: int) -> None:
        super().__init__(model)
        self.upload = upload
        self.number = number


def upload_context(request: Request) -> UploadContext:
    """Find the session; 404 unless it is open and the caller's (401 for anonymous callers
    of a registry closed to them)."""
    found = request.file_service.find_upload(request.matchdict["upload"])
    caller = request.authenticated_userid
    if found is None or found[0].owner != caller:
        if caller is None and security_policy(request).anonymous < Level.READ:
            raise denial(request, READ, None)
        raise upload_not_found()
    upload, model, number = found
    return UploadContext(model, upload, number)


# --------------------------------------------------------------------------- services


def file_service(request: Request) -> FileService:
    """The request's :class:`FileService` (``request.file_service``)."""
    return FileService(request.registry_service, request.blob_store)


def _check_body_size(request: Request, limit: int) -> None:
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(
            f"request body too large: at most {limit} bytes in one request"
            + ("; use an upload session for larger files" if request.method == "PUT" else ""),
            details={"max_bytes": limit},
        )


# ------------------------------------------------------------------------------ files


@api_view("api.files", "GET", permission=READ, response=schemas.FileList, etag=True,
          read_only=True, tags=["files"])
def list_files(request: Request) -> dict[str, Any]:
    """List the files of a version (by number, alias, ``latest`` or digest)."""
    version, files = request.file_service.list_files(
        request.matchdict["model"], request.matchdict["version"])
    listed = ([file_json(f) for f in files] if version.status != ARCHIVED
              else list(version.archived_files or ()))
    return {"model": version.model.name, "version": version.number,
            "digest": version.digest, "files": listed}


@api_view("api.files", "POST", permission=WRITE, body=schemas.FileLink,
          response=schemas.FileOut, status=201, also=(200,), errors=(409, 503),
          tags=["files"])
def link_file(request: Request) -> dict[str, Any]:
    """Add a file to a draft by the digest of content the registry already holds.

    No bytes are sent: the content must be stored and held by some version the caller may
    read, else ``404 blob_not_found`` (the same answer for unknown content and for content
    only in models hidden from the caller) and the client uploads it.  ``201`` for a new
    path, ``200`` when the path already had these bytes or had others (replaced).
    """
    body = parse_body(request, schemas.FileLink)
    sha256 = parse_hex_digest(body.digest)
    model, ref = request.matchdict["model"], request.matchdict["version"]
    file, outcome = request.file_service.link_file(
        model, ref, body.path, sha256, media=media_type(body.media_type), size=body.size,
        readable=readable_models(request))
    result = file_json(file)
    if outcome == "created":
        request.response.status_code = 201
        request.response.location = request.route_url(
            "api.file", model=model, version=ref, path=body.path)
    else:
        request.response.status_code = 200
    return result


@api_view("api.file", "GET", permission=READ, response_media=BINARY, also=(206,),
          empty=(302, 304), errors=(410, 416, 422, 503), tags=["files"])
def download_file(request: Request) -> Response:
    """Download a file (``Range``, ``If-None-Match``); ``HEAD`` for its headers only."""
    _version, file = request.file_service.get_file(
        request.matchdict["model"], request.matchdict["version"], request.matchdict["path"])
    return send_blob(request, file.sha256, file.size, path=file.path,
                     media_type=file.media_type)


@api_view("api.file", "PUT", permission=WRITE, body_media=BINARY, response=schemas.FileOut,
          also=(201,), errors=(409, 413, 422, 503, 507), tags=["files"])
def upload_file(request: Request) -> dict[str, Any]:
    """Upload a file to a draft in one request (up to ``modelreg.upload.max_put_size``).

    The body is streamed through sha256 into the blob store; ``Digest: sha-256=<base64>`` or
    ``?digest=sha256:<hex>`` must match it.  The same bytes again change nothing (200);
    other bytes replace the file (200); a new path answers 201.
    """
    limit = max_put_size(request.registry.settings)
    _check_body_size(request, limit)
    expected = client_digest(request)
    model, ref, path = (request.matchdict[k] for k in ("model", "version", "path"))
    version = request.file_service.draft(model, ref)  # 404/409/422 before reading the body
    request.file_service.check_new_file(version, path)  # and again under the lock
    # The size policy on the declared length first, before a byte is stored...
    check_upload(request.dbsession, request.registry.settings, version, path,
                 request.content_length)
    body, outcome = request.upload_service.put_file(
        model, ref, path, metered(body_stream(request), "upload", request.registry),
        expected_sha256=expected, max_size=limit,
        media_type=media_type(request.headers.get("Content-Type")))
    if outcome == "created":
        request.response.status_code = 201
        request.response.location = request.route_url(
            "api.file", model=model, version=ref, path=path)
    return body


@api_view("api.file", "DELETE", permission=WRITE, status=204, errors=(409, 422),
          tags=["files"])
def delete_file(request: Request) -> Response:
    """Delete a file of a draft."""
    request.file_service.delete_file(
        request.matchdict["model"], request.matchdict["version"], request.matchdict["path"])
    return Response(status=204)


# ---------------------------------------------------------------------- upload sessions


def upload_service(request: Request) -> UploadService:
    """The request's :class:`~.uploads.UploadService` (``request.upload_service``)."""
    reading: RegistryService = request.registry_service
    return UploadService(request.registry, request.blob_store, reading.hook,
                         actor=reading.actor, client_addr=reading.client_addr,
                         token_id=reading.token_id)


def _session_json(request: Request, snapshot: UploadSnapshot) -> dict[str, Any]:
    body = upload_json(request, snapshot.upload, snapshot.model, snapshot.number)
    body["parts"] = (direct.held_parts(request.blob_store, snapshot.upload)
                     if snapshot.upload.direct else snapshot.parts)
    _upload_headers(request, snapshot.upload.public_id, snapshot.upload.offset)
    return body


@api_view("api.uploads", "POST", permission=WRITE, body=schemas.UploadCreate,
          response=schemas.UploadOut, status=201, errors=(409, 413, 422, 503, 507),
          tags=["files"])
def open_upload(request: Request) -> dict[str, Any]:
    """Open a resumable upload session for one file of a draft.

    With ``size`` and ``part_size`` the file is sent in numbered parts (``PUT
    …/parts/{n}``, in any order, in parallel); without ``part_size``, in sequential chunks
    (``PATCH``).  The declared ``size`` counts towards the size rules at once; ``409
    too_many_uploads`` past ``modelreg.upload.max_open_sessions`` open sessions.
    """
    body = parse_body(request, schemas.UploadCreate)
    sha256 = None if body.digest is None else parse_hex_digest(body.digest)
    snapshot = request.upload_service.open(
        request.matchdict["model"], request.matchdict["version"], path=body.path,
        owner=request.authenticated_userid, size=body.size, sha256=sha256,
        media=media_type(body.media_type), part_size=body.part_size, direct=body.direct)
    result = _session_json(request, snapshot)
    request.response.status_code = 201
    return result


def _upload_headers(request: Request, public_id: str, offset: int) -> None:
    request.response.headers["Upload-Offset"] = str(offset)
    request.response.location = request.route_url("api.upload", upload=public_id)


@api_view("api.upload", "GET", permission=READ, response=schemas.UploadOut, tags=["files"])
def get_upload(request: Request) -> dict[str, Any]:
    """The state of an upload session: the bytes and the parts it holds (where to resume)."""
    context: UploadContext = request.context
    return _session_json(request, request.upload_service.status(context.upload.public_id))


def _chunk_bounds(request: Request) -> tuple[int | None, int]:
    """``(start, length)`` of the chunk a ``PATCH`` (or a completing ``PUT``) carries;
    ``start`` is ``None`` without a ``Content-Range``."""
    length = request.content_length
    if length is None:
        raise ApiError("a chunk needs a Content-Length", code="length_required", status=411)
    header = request.headers.get("Content-Range")
    if header is None:
        return None, length
    match = _CONTENT_RANGE.fullmatch(header.strip())
    start, last = (_HUGE, _HUGE) if match is None else (
        _position(match.group(1)), _position(match.group(2)))
    if last >= _HUGE or last < start:
        raise BadRequest("Content-Range must be '<first>-<last>' (byte positions, inclusive)",
                         code="invalid_content_range")
    if last - start + 1 != length:
        raise BadRequest(f"Content-Range covers {last - start + 1} bytes but the body has "
                         f"{length}", code="invalid_content_range")
    return start, length


def _receive_chunk(request: Request, context: UploadContext) -> UploadSnapshot:
    """Store the request's body as the session's next chunk."""
    _check_body_size(request, max_put_size(request.registry.settings))
    start, length = _chunk_bounds(request)
    body = metered(body_stream(request), "upload", request.registry)
    return request.upload_service.append(context.upload.public_id, start, body, length)


@api_view("api.upload", "PATCH", permission=WRITE, body_media=BINARY,
          response=schemas.UploadOut, status=202, errors=(409, 411, 413, 416, 422, 503, 507),
          tags=["files"])
def upload_chunk(request: Request) -> dict[str, Any]:
    """Send the next chunk: ``Content-Range: <first>-<last>`` must start at the offset.

    A chunk is claimed under the session's lock before its body is read: a second chunk
    at the same offset is refused (``416 chunk_out_of_order``) and never stored.
    """
    context: UploadContext = request.context
    snapshot = _receive_chunk(request, context)
    request.response.status_code = 202
    return _session_json(request, snapshot)


def _part_number(request: Request) -> int:
    text = request.matchdict["number"]
    if not text.isascii() or not text.isdigit() or len(text) > 5 or int(text) < 1:
        raise ApiError(f"parts are numbered 1 to {MAX_PARTS}", code="part_out_of_range",
                       status=416, details={"max_parts": MAX_PARTS})
    return int(text)


@api_view("api.upload_part", "PUT", permission=WRITE, body_media=BINARY,
          response=schemas.PartOut, status=201, also=(200,),
          params=(Param("digest", "sha256:<hex> of the part (or a Content-Digest or "
                        "Digest header); required."),),
          errors=(409, 411, 413, 416, 422, 503, 507), tags=["files"])
def put_part(request: Request) -> dict[str, Any]:
    """Send part ``n`` (1-based) of a session opened with ``part_size``.

    Part ``n`` holds the bytes from ``(n-1) * part_size``; every part but the last has
    exactly ``part_size`` bytes.  Parts may be sent in any order and in parallel.  201 once
    stored; 200 when the part already holds these bytes (nothing read); ``409 part_exists``
    when it holds others (``DELETE`` it first), ``409 part_in_progress`` while another
    request sends it: its number is claimed before a byte is written, so a second sender
    never overwrites it.
    """
    context: UploadContext = request.context
    number = _part_number(request)
    if context.upload.direct:
        raise Conflict(f"this session's parts go straight to the blob store: POST "
                       f"…/parts/{number}/url for where to send part {number}",
                       code="upload_mode")
    _check_body_size(request, max_put_size(request.registry.settings))
    length = request.content_length
    if length is None:
        raise ApiError("a part needs a Content-Length", code="length_required", status=411)
    sha256 = client_digest(request)
    if sha256 is None:
        raise BadRequest("a part needs its digest: ?digest=sha256:<hex>, or a "
                         "Content-Digest: sha-256=:<base64>: header", code="digest_required")
    body = metered(body_stream(request), "upload", request.registry)
    part, stored = request.upload_service.put_part(context.upload.public_id, number, body,
                                                   length, sha256=sha256)
    request.response.status_code = 201 if stored else 200
    request.response.location = request.route_url(
        "api.upload_part", upload=context.upload.public_id, number=number)
    return part


@api_view("api.upload_part_url", "POST", permission=WRITE, body=schemas.PartUrlIn,
          response=schemas.PartUrlOut, errors=(409, 416, 422, 503), tags=["files"])
def part_url(request: Request) -> dict[str, Any]:
    """Where to send part ``n`` of a direct upload (``"direct": true``): a presigned
    request to the blob store, signed for the part's exact length and digest.

    The client sends the part's bytes there with exactly the ``headers`` given and without
    its modelreg credentials, then completes the session as usual (``PUT …?digest=``),
    which answers ``202`` while the worker verifies the whole file's digest.
    """
    context: UploadContext = request.context
    number = _part_number(request)
    body = parse_body(request, schemas.PartUrlIn)
    return direct.presign_part(request.upload_service, context.upload, number,
                               parse_hex_digest(body.digest))


@api_view("api.upload_part", "DELETE", permission=WRITE, status=204, errors=(409, 416),
          tags=["files"])
def delete_part(request: Request) -> Response:
    """Free a received part, so that its number can be sent again (for instance after a
    completion refused for a wrong digest showed that this part differs)."""
    context: UploadContext = request.context
    request.upload_service.delete_part(context.upload.public_id, _part_number(request))
    return Response(status=204)


@api_view("api.upload", "PUT", permission=WRITE, body_media=BINARY,
          response=schemas.FileOut, also=(201,), others={202: schemas.UploadOut}, params=(
              Param("digest", "sha256:<hex> of the whole file (required)."),),
          errors=(409, 411, 413, 416, 422, 503, 507), tags=["files"])
def complete_upload(request: Request) -> dict[str, Any]:
    """Complete an upload with the whole file's digest (``?digest=sha256:<hex>``); an
    optional body is its last chunk (sequential uploads only).  Creates or replaces the file.

    A wrong digest keeps the session and its parts: ``400 digest_mismatch`` lists them
    (number, start, size, digest) so that the client sends again only those that differ.
    Content the size rules refuse (``422``) is deleted at once, with the session.  A direct
    upload (``"direct": true``) answers ``202`` with the session, ``"status":
    "verifying"``, until the worker has read it once and checked its digest.
    """
    context: UploadContext = request.context
    expected = client_digest(request)
    if expected is None:
        raise BadRequest("completing an upload needs ?digest=sha256:<hex> of the whole file",
                         code="digest_required")
    upload = context.upload
    if upload.sha256 is not None and not same_digest(upload.sha256, expected):
        raise BadRequest("the digest differs from the one announced when the upload was "
                         "opened", code="digest_mismatch",
                         details={"expected": DIGEST_PREFIX + upload.sha256})
    if upload.direct:  # 202: the worker verifies the digest (see .direct)
        if request.content_length:
            raise Conflict("a direct upload's parts go to the blob store, not in the "
                           "completing request", code="upload_mode")
        request.response.status_code = 202
        return _session_json(request, direct.complete(request.upload_service,
                                                      upload.public_id, expected))
    if request.content_length:
        _receive_chunk(request, context)
    body, outcome = request.upload_service.complete(upload.public_id, expected)
    request.response.location = request.route_url(
        "api.file", model=context.model, version=str(context.number), path=body["path"])
    if outcome == "created":
        request.response.status_code = 201
    return body


@api_view("api.upload", "DELETE", permission=WRITE, status=204, errors=(409,),
          tags=["files"])
def abort_upload(request: Request) -> Response:
    """Abort an upload session and free what it received."""
    context: UploadContext = request.context
    request.upload_service.abort(context.upload.public_id)
    return Response(status=204)


def includeme(config: Configurator) -> None:
    """Routes of the file API, its streaming views, ``request.file_service``."""
    config.add_request_method(file_service, "file_service", reify=True)
    config.add_request_method(upload_service, "upload_service", reify=True)
    prefix = "/api/v1/models/{model}/versions/{version}"
    config.add_route("api.files", prefix + "/files")
    # Any characters, newlines included, so that every bad path reaches check_path (422).
    config.add_route("api.file", prefix + r"/files/{path:[\s\S]*}", factory=file_context)
    config.add_route("api.uploads", prefix + "/uploads")
    config.add_route("api.upload", "/api/v1/uploads/{upload}", factory=upload_context)
    config.add_route("api.upload_part", "/api/v1/uploads/{upload}/parts/{number}",
                     factory=upload_context)
    config.add_route("api.upload_part_url", "/api/v1/uploads/{upload}/parts/{number}/url",
                     factory=upload_context)
    # Views that write through the upload service's own short transactions.
    for route, method in (("api.file", "PUT"), ("api.uploads", "POST"),
                          ("api.upload", "PATCH"), ("api.upload", "PUT"),
                          ("api.upload", "DELETE"), ("api.upload_part", "PUT"),
                          ("api.upload_part", "DELETE"),
                          # Signs a URL and writes nothing: its session only reads.
                          ("api.upload_part_url", "POST")):
        add_streaming_view(config, route, method)
    config.scan(".views")
