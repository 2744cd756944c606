"""REST views of files and upload sessions (``/api/v1``).

``PUT`` of a file and the chunks and completion of an upload session stream their body to the
blob store: they are marked with :func:`modelreg.db.add_streaming_view` (never retried, the
request's session only reads) and write through :func:`.services.write_transaction`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import FileIter, Response

from ..db import add_streaming_view
from ..errors import ApiError, BadRequest, PayloadTooLarge, Unprocessable
from ..logs import log_when_sent
from ..metrics import metered
from ..models import UploadSession, utcnow
from ..openapi import Param, api_view, parse_body
from ..policy import ARCHIVED, check_upload
from ..registry.names import DIGEST_PREFIX
from ..registry.services import RegistryService
from ..security.access import Level
from ..security.policy import ModelContext, denial, get_policy, readable_models, root_factory
from ..storage.errors import DigestMismatch
from . import schemas
from .paths import basename, check_path
from .services import (
    FileService,
    client_digest,
    file_json,
    max_put_size,
    media_type,
    min_chunk_size,
    parse_hex_digest,
    same_digest,
    session_ttl,
    touch_blob,
    upload_json,
    upload_not_found,
    write_transaction,
)

READ, WRITE = "read", "write"
BINARY = "application/octet-stream"
#: Bytes read from a blob at a time when sending a file.
SEND_BLOCK = 1024 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CONTENT_RANGE = re.compile(r"(?:bytes )?(\d+)-(\d+)(?:/(\d+|\*))?")
#: Byte positions past this are beyond any file (and than a signed 64-bit column holds).
_HUGE = 2**63


def _position(digits: str) -> int:
    """The number ASCII ``digits`` write, or :data:`_HUGE` when it is larger: never ``int()``
    of thousands of digits (Python refuses more than 4,300 with ``ValueError``)."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= 19 else _HUGE


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
        if caller is None and get_policy(request).anonymous < Level.READ:
            raise denial(request, READ, None)
        raise upload_not_found()
    upload, model, number = found
    return UploadContext(model, upload, number)


# --------------------------------------------------------------------------- services


def file_service(request: Request) -> FileService:
    """The request's :class:`FileService` (``request.file_service``)."""
    return FileService(request.registry_service, request.blob_store)


def _writing_services(request: Request, db: Any) -> FileService:
    """The request's services over ``db`` (a :func:`write_transaction`'s session)."""
    reading: RegistryService = request.registry_service
    registry = RegistryService(db, reading.hook, reading.settings, actor=reading.actor,
                               client_addr=reading.client_addr, token_id=reading.token_id)
    return FileService(registry, request.blob_store)


def _record_blob(request: Request, info: Any) -> None:
    """Touch the stored blob's row in a transaction of its own (see the services' doc)."""
    with write_transaction(request.registry) as db:
        touch_blob(db, info)


def _check_body_size(request: Request, limit: int) -> None:
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(
            f"request body too large: at most {limit} bytes in one request"
            + ("; use an upload session for larger files" if request.method == "PUT" else ""),
            details={"max_bytes": limit},
        )


# ------------------------------------------------------------------------------ files


@api_view("api.files", "GET", permission=READ, response=schemas.FileList, tags=["files"])
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


def _parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """``(start, end)`` of a single satisfiable range, ``None`` to send everything, ``False``
    for an unsatisfiable one.  Malformed and multiple ranges are ignored (RFC 9110)."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if any(_position(value) >= _HUGE for value in (first, last) if value):
        return False  # no file is that large: an invalid range, refused (RFC 9110 §15.5.17)
    if first == "":
        suffix = _position(last)
        if suffix == 0 or size == 0:
            return False
        return max(size - suffix, 0), size
    start = _position(first)
    if last != "" and _position(last) < start:
        return None
    if start >= size:
        return False
    end = size if last == "" else min(_position(last) + 1, size)
    return start, end


class _BoundedReads:
    """A seekable stream whose reads return at most :data:`SEND_BLOCK` bytes.

    Waitress's file wrapper reads as much per send as the socket's send buffer holds (4 MiB
    on Linux loopback); bounded reads keep the server's memory flat however many downloads
    run at once.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > SEND_BLOCK:
            size = SEND_BLOCK
        return self._stream.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def close(self) -> None:
        self._stream.close()


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _content_disposition(path: str) -> str:
    name = basename(path)
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


@api_view("api.file", "GET", permission=READ, response_media=BINARY, also=(206,),
          empty=(302, 304), errors=(410, 416, 422, 503), tags=["files"])
def download_file(request: Request) -> Response:
    """Download a file (``Range``, ``If-None-Match``); ``HEAD`` for its headers only."""
    _version, file = request.file_service.get_file(
        request.matchdict["model"], request.matchdict["version"], request.matchdict["path"])
    store = request.blob_store
    etag = f'"{file.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": _content_disposition(file.path),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=0, must-revalidate",
    }
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status=304, headerlist=list(headers.items()))
    url = store.download_url(file.sha256, filename=basename(file.path))
    if url is not None:
        return Response(status=302, headerlist=[*headers.items(), ("Location", url)])
    wanted = _parse_range(request.headers.get("Range"), file.size)
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        wanted = None
    if wanted is False:
        error = ApiError(
            f"the range is not satisfiable: the file has {file.size} bytes",
            code="range_not_satisfiable", status=416,
            details={"size": file.size},
            headers={**headers, "Content-Range": f"bytes */{file.size}"},
        )
        raise error
    start, end = wanted if wanted else (0, file.size)
    status = 206 if wanted else 200
    headers["Content-Type"] = file.media_type
    if wanted:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{file.size}"
    response = Response(status=status, headerlist=list(headers.items()))
    if request.method == "HEAD":
        response.content_length = end - start
        return response
    stream = metered(store.open(file.sha256, start, end), "download", request.registry)
    # The access log says what the client got once the body is sent (a 200 that failed
    # mid-stream is no 200): see modelreg.logs.LoggedBody.
    stream = log_when_sent(request, response, stream, end - start)
    wrapper = request.environ.get("wsgi.file_wrapper")
    if wrapper is not None and store.file_path(file.sha256) is not None:
        response.app_iter = wrapper(_BoundedReads(stream), SEND_BLOCK)
    else:
        response.app_iter = FileIter(stream, SEND_BLOCK)
    response.content_length = end - start
    return response


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
    info = request.blob_store.put(metered(request.body_file, "upload", request.registry),
                                  expected_sha256=expected, max_size=limit)
    _record_blob(request, info)
    with write_transaction(request.registry) as db:
        service = _writing_services(request, db)
        version = service.draft(model, ref, lock=True)
        # ...and on the stored size under the version's lock: a refusal records no file.
        check_upload(db, request.registry.settings, version, path, info.size)
        file, outcome = service.add_file(version, path, info,
                                         media_type(request.headers.get("Content-Type")))
        body = file_json(file)
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


@api_view("api.uploads", "POST", permission=WRITE, body=schemas.UploadCreate,
          response=schemas.UploadOut, status=201, errors=(409, 413, 422, 503, 507),
          tags=["files"])
def open_upload(request: Request) -> dict[str, Any]:
    """Open a resumable upload session for one file of a draft."""
    body = parse_body(request, schemas.UploadCreate)
    sha256 = None if body.digest is None else parse_hex_digest(body.digest)
    if body.size is not None:
        version = request.file_service.draft(request.matchdict["model"],
                                             request.matchdict["version"])
        check_upload(request.dbsession, request.registry.settings, version, body.path,
                     body.size)
    upload, version = request.file_service.open_upload(
        request.matchdict["model"], request.matchdict["version"], path=body.path,
        owner=request.authenticated_userid, size=body.size, sha256=sha256,
        media=media_type(body.media_type),
    )
    result = upload_json(request, upload, version.model.name, version.number)
    request.response.status_code = 201
    request.response.location = request.route_url("api.upload", upload=upload.public_id)
    return result


def _upload_headers(request: Request, offset: int) -> None:
    request.response.headers["Upload-Offset"] = str(offset)
    request.response.location = request.route_url(
        "api.upload", upload=request.matchdict["upload"])


@api_view("api.upload", "GET", permission=READ, response=schemas.UploadOut, tags=["files"])
def get_upload(request: Request) -> dict[str, Any]:
    """The state of an upload session: how many bytes it holds (where to resume)."""
    context: UploadContext = request.context
    _upload_headers(request, context.upload.offset)
    return upload_json(request, context.upload, context.model, context.number)


def _chunk_bounds(request: Request, offset: int) -> tuple[int, int]:
    """``(start, length)`` of the chunk a ``PATCH`` (or a completing ``PUT``) carries."""
    length = request.content_length
    if length is None:
        raise ApiError("a chunk needs a Content-Length", code="length_required", status=411)
    header = request.headers.get("Content-Range")
    if header is None:
        return offset, length
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


def _out_of_order(request: Request, offset: int, message: str) -> ApiError:
    return ApiError(message, code="chunk_out_of_order", status=416,
                    details={"offset": offset},
                    headers={"Upload-Offset": str(offset), "Range": f"0-{max(offset - 1, 0)}"})


def _receive_chunk(request: Request, context: UploadContext) -> Any:
    """Store the request's body as the session's next chunk; return the updated session."""
    settings = request.registry.settings
    upload = context.upload
    limit = max_put_size(settings)
    _check_body_size(request, limit)
    start, length = _chunk_bounds(request, upload.offset)
    if start != upload.offset:
        raise _out_of_order(request, upload.offset,
                            f"the next chunk must start at byte {upload.offset}, not {start}")
    if length == 0:
        return upload
    end = start + length
    if upload.size is not None and end > upload.size:
        raise _out_of_order(request, upload.offset,
                            f"the chunk ends past the file's announced size ({upload.size})")
    minimum = min_chunk_size(settings)
    if upload.size is not None and length < minimum and end != upload.size:
        raise Unprocessable(f"chunks other than the last must have at least {minimum} bytes",
                            code="chunk_too_small", details={"min_chunk_size": minimum})
    version = request.file_service.draft(context.model, str(context.number))
    check_upload(request.dbsession, settings, version, upload.path, end)
    body = metered(request.body_file, "upload", request.registry)
    state = request.blob_store.upload_chunk(upload.state, offset=start, stream=body,
                                            length=length)
    with write_transaction(request.registry) as db:
        service = _writing_services(request, db)
        row = service.find_upload(upload.public_id)
        if row is None:
            raise upload_not_found()
        current = row[0]
        service.db.refresh(current, with_for_update=True)
        if current.offset != start:
            raise _out_of_order(request, current.offset,
                                f"another chunk was received meanwhile: the next one must "
                                f"start at byte {current.offset}")
        current.state = state
        current.offset = end
        if current.size is None and length < minimum:
            current.size = end  # a short chunk is the last: the size is now known
        current.updated_at = utcnow()
        current.expires_at = current.updated_at + dt.timedelta(seconds=session_ttl(settings))
        service.db.flush()
        db.expunge(current)
    return current


@api_view("api.upload", "PATCH", permission=WRITE, body_media=BINARY,
          response=schemas.UploadOut, status=202, errors=(409, 411, 413, 416, 422, 503, 507),
          tags=["files"])
def upload_chunk(request: Request) -> dict[str, Any]:
    """Send the next chunk: ``Content-Range: <first>-<last>`` must start at the offset."""
    context: UploadContext = request.context
    upload = _receive_chunk(request, context)
    _upload_headers(request, upload.offset)
    request.response.status_code = 202
    return upload_json(request, upload, context.model, context.number)


@api_view("api.upload", "PUT", permission=WRITE, body_media=BINARY,
          response=schemas.FileOut, also=(201,), params=(
              Param("digest", "sha256:<hex> of the whole file (required)."),),
          errors=(409, 411, 413, 416, 422, 503, 507), tags=["files"])
def complete_upload(request: Request) -> dict[str, Any]:
    """Complete an upload with the whole file's digest (``?digest=sha256:<hex>``); an
    optional body is its last chunk.  Creates or replaces the file."""
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
    if request.content_length:
        upload = _receive_chunk(request, context)
    if upload.size is not None and upload.offset != upload.size:
        raise Unprocessable(f"the upload holds {upload.offset} of its announced "
                            f"{upload.size} bytes", code="upload_incomplete",
                            details={"offset": upload.offset, "size": upload.size})
    model, number = context.model, str(context.number)
    request.file_service.draft(model, number)
    try:
        info = request.blob_store.complete_upload(upload.state, expected_sha256=expected)
    except DigestMismatch:  # the upload is over and its data gone: forget the session
        _delete_upload(request, upload.public_id)
        raise
    _record_blob(request, info)
    try:
        with write_transaction(request.registry) as db:
            service = _writing_services(request, db)
            version = service.draft(model, number, lock=True)
            check_upload(db, request.registry.settings, version, upload.path, info.size)
            file, outcome = service.add_file(version, upload.path, info, upload.media_type)
            _delete_upload_row(db, upload.public_id)
            body = file_json(file)
    except Unprocessable as exc:
        # The size policy or the path rules (a file of the same name as a folder, ...)
        # refused the completed file: the session's data is gone with it.
        if exc.code in ("validation_failed", "invalid_path"):
            _delete_upload(request, upload.public_id)
        raise
    request.response.location = request.route_url(
        "api.file", model=model, version=number, path=upload.path)
    if outcome == "created":
        request.response.status_code = 201
    return body


def _delete_upload_row(db: Any, public_id: str) -> None:
    db.execute(sa.delete(UploadSession).where(UploadSession.public_id == public_id))


def _delete_upload(request: Request, public_id: str) -> None:
    with write_transaction(request.registry) as db:
        _delete_upload_row(db, public_id)


@api_view("api.upload", "DELETE", permission=WRITE, status=204, tags=["files"])
def abort_upload(request: Request) -> Response:
    """Abort an upload session and free what it received."""
    context: UploadContext = request.context
    request.blob_store.abort_upload(context.upload.state)
    _delete_upload_row(request.dbsession, context.upload.public_id)
    return Response(status=204)


def includeme(config: Configurator) -> None:
    """Routes of the file API, its streaming views, ``request.file_service``."""
    config.add_request_method(file_service, "file_service", reify=True)
    prefix = "/api/v1/models/{model}/versions/{version}"
    config.add_route("api.files", prefix + "/files")
    # Any characters, newlines included, so that every bad path reaches check_path (422).
    config.add_route("api.file", prefix + r"/files/{path:[\s\S]*}", factory=file_context)
    config.add_route("api.uploads", prefix + "/uploads")
    config.add_route("api.upload", "/api/v1/uploads/{upload}", factory=upload_context)
    for route, method in (("api.file", "PUT"), ("api.upload", "PATCH"),
                          ("api.upload", "PUT")):
        add_streaming_view(config, route, method)
    config.scan(".views")
