"""MLflow's artifact proxy (``/api/2.0/mlflow-artifacts/…``) over modelreg's blob store.

Paths under the artifact root:

- ``<experiment>/<run>/artifacts/…``: a run's artifacts;
- ``<experiment>/models/<logged model>/artifacts/…``: a logged model's (MLflow 3);
- ``registered-models/<name>/<version>/…``: the files of a model version (read-only: what
  ``get-download-uri`` points ``models:/`` URIs at).

A run's or logged model's file is a blob this plugin holds (``modelreg.api`` blob holds, owner
:data:`HOLD_OWNER`, one key per path), so garbage collection keeps it while the row exists;
registering links the blobs into a version by digest, never copying bytes.

Files larger than one request (``modelreg.upload.max_put_size``) come through MLflow's
proxied multipart upload (``mpu/create``, a ``PUT`` per part to the URL ``create`` gave,
``mpu/complete``), enabled in the client with ``MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=true``.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
import secrets
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlparse

import sqlalchemy as sa
from pyramid.request import Request
from pyramid.response import Response

from modelreg.api import (
    READ,
    WRITE,
    ApiError,
    BlobTooLarge,
    PayloadTooLarge,
    audit_request,
    mark_changed,
    registry_of,
    send_blob,
    transaction,
)

from . import tables
from .protocol import MlflowError, invalid, missing, now_ms, params, required

#: The owner of this plugin's blob holds.
HOLD_OWNER = "mlflow"
#: The artifact root's directory of registered versions.
REGISTERED = "registered-models"
ROOT = "/api/2.0/mlflow-artifacts"
DEFAULT_MAX_PUT = 256 * 1024 * 1024
_ID = re.compile(r"^[0-9a-f]{32}$")
_MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")


def path_key(path: str) -> str:
    """The row key of the artifact at ``path``: the hex sha256 of the path."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()


def hold_key(path: str) -> str:
    """The hold key of the artifact at ``path`` (bounded length, one per path)."""
    return "artifact:" + path_key(path)


def owner_in(path: str) -> str | None:
    """The run or logged model a path lies under, read from the path alone."""
    parts = path.split("/")
    if len(parts) >= 2 and parts[0].isdigit() and _ID.match(parts[1]):
        return parts[1]
    if len(parts) >= 3 and parts[0].isdigit() and parts[1] == "models" and \
            _MODEL_ID.match(parts[2]):
        return parts[2]
    return None


def _under(table: Any, prefix: str) -> Any:
    """SQL: the artifacts strictly under ``prefix`` (narrowed to its owner's rows)."""
    clause = table.c.path.startswith(prefix + "/", autoescape=True)
    owner = owner_in(prefix)
    return clause if owner is None else sa.and_(table.c.owner == owner, clause)


def part_key(upload_id: str, number: int) -> str:
    """The hold key of part ``number`` of a multipart upload."""
    return f"mpu:{upload_id}:{number}"


def registered_uri(model: str, number: int) -> str:
    """Where a version's files are under the artifact proxy."""
    return f"mlflow-artifacts:/{REGISTERED}/{quote(model, safe='')}/{number}"


def max_put_size(settings: dict[str, Any]) -> int:
    """The largest body of one request (``modelreg.upload.max_put_size``)."""
    value = settings.get("modelreg.upload.max_put_size")
    return int(value) if value not in (None, "") else DEFAULT_MAX_PUT


def clean_path(path: str) -> str:
    """A relative artifact path without ``.``/``..``/empty segments (400 otherwise)."""
    path = path.strip("/")
    parts = path.split("/") if path else []
    if any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
        raise invalid(f"Invalid artifact path: '{path}'")
    return "/".join(parts)


# ------------------------------------------------------------------------------ owners


def owner_of(request: Request, path: str) -> tuple[str, str, str]:
    """``(kind, id, root)`` of the run or logged model a path belongs to: ``kind`` is
    ``run`` or ``model``; ``root`` the owner's artifact root.  404 for an unknown owner."""
    parts = path.split("/")
    db = request.dbsession
    if len(parts) >= 3 and parts[0].isdigit() and _ID.match(parts[1]) and \
            parts[2] == "artifacts":
        row = db.execute(sa.select(tables.runs.c.experiment_id).where(
            tables.runs.c.id == parts[1])).first()
        if row is not None and str(row.experiment_id) == parts[0]:
            return "run", parts[1], "/".join(parts[:3])
        raise missing(f"Run '{parts[1]}' not found")
    if len(parts) >= 4 and parts[0].isdigit() and parts[1] == "models" and \
            _MODEL_ID.match(parts[2]) and parts[3] == "artifacts":
        row = db.execute(sa.select(tables.logged_models.c.experiment_id).where(
            tables.logged_models.c.id == parts[2])).first()
        if row is not None and str(row.experiment_id) == parts[0]:
            return "model", parts[2], "/".join(parts[:4])
        raise missing(f"Logged model '{parts[2]}' not found")
    raise missing(f"No artifact root holds '{path}' in this server")


def files_under(request: Request, prefix: str) -> list[tuple[str, Any]]:
    """``(relative path, row)`` of the artifacts under ``prefix``, sorted."""
    prefix = prefix.rstrip("/")
    table = tables.artifacts
    rows = request.dbsession.execute(sa.select(table).where(_under(table, prefix))
                                     .order_by(table.c.path))
    return [(row.path[len(prefix) + 1:], row._mapping) for row in rows]


def registered_source(source: str) -> tuple[str, str] | None:
    """``(model, ref)`` of a source naming a registered version: ``models:/name/3``,
    ``models:/name@alias``, ``mlflow-artifacts:/registered-models/name/3``; else ``None``
    (``models:/m-…`` is a logged model)."""
    if source.startswith("models:/"):
        rest = source[len("models:/"):].strip("/")
        if "@" in rest:
            model, _, alias = rest.rpartition("@")
            return unquote(model), alias
        model, sep, ref = rest.rpartition("/")
        if sep and model:
            return unquote(model), ref
        return None
    parsed = urlparse(source)
    if parsed.scheme == "mlflow-artifacts" and not parsed.netloc:
        parts = parsed.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == REGISTERED and parts[2].isdigit():
            return unquote(parts[1]), parts[2]
    return None


def resolve_source(request: Request, source: str, values: dict[str, Any]
                   ) -> tuple[str, str | None, str | None]:
    """The artifact prefix a model version's ``source`` names in this server, with the run
    and logged model it comes from: ``(prefix, run_id, model_id)``.

    ``INVALID_PARAMETER_VALUE`` for a source outside this server (``s3://``, ``file:``,
    another host): modelreg registers only bytes it holds and has verified.
    """
    parsed = urlparse(source)
    path: str | None = None
    if parsed.scheme == "runs":
        run_id, _, rest = source[len("runs:/"):].lstrip("/").partition("/")
        row = request.dbsession.execute(sa.select(tables.runs.c.experiment_id).where(
            tables.runs.c.id == run_id)).first()
        if row is None:
            raise missing(f"Run '{run_id}' not found")
        path = f"{row.experiment_id}/{run_id}/artifacts/{rest}".rstrip("/")
    elif parsed.scheme == "models":
        model_id = source[len("models:/"):].strip("/")
        row = request.dbsession.execute(sa.select(tables.logged_models).where(
            tables.logged_models.c.id == model_id)).first()
        if row is None:
            raise invalid(f"Source '{source}' is not a logged model of this server (register "
                          "a registered model's version by its run or logged model)")
        path = f"{row.experiment_id}/models/{model_id}/artifacts"
    elif parsed.scheme == "mlflow-artifacts" and not parsed.netloc:
        path = parsed.path
    elif parsed.scheme in ("http", "https") and parsed.netloc == request.host and \
            parsed.path.startswith(ROOT + "/artifacts/"):
        path = parsed.path[len(ROOT + "/artifacts/"):]
    if path is None:
        raise invalid(
            f"Source '{source}' points outside this modelreg server: modelreg registers "
            "only artifacts logged to it (runs:/, models:/<logged model>, mlflow-artifacts:/), "
            "whose bytes it holds and has verified. Log the model to this server first.")
    path = clean_path(path)
    kind, owner, _root = owner_of(request, path)
    run_id = owner if kind == "run" else None
    model_id = owner if kind == "model" else None
    if kind == "model":
        run_id = request.dbsession.scalar(sa.select(tables.logged_models.c.source_run_id)
                                          .where(tables.logged_models.c.id == owner))
    return path, run_id, model_id


def _registered(path: str) -> tuple[str, int, str] | None:
    """``(model, version, file path)`` of a path under ``registered-models/``."""
    parts = path.split("/", 3)
    if parts[0] != REGISTERED:
        return None
    if len(parts) < 3 or not parts[2].isdigit():
        raise missing(f"No registered model version at '{path}'")
    return parts[1], int(parts[2]), parts[3] if len(parts) > 3 else ""


def _registered_files(request: Request, model: str, number: int) -> list[dict[str, Any]]:
    try:
        return registry_of(request).list_files(model, number)
    except ApiError as error:
        if error.status == 404:
            raise missing(f"Model Version (name={model}, version={number}) not found") \
                from None
        raise


# ------------------------------------------------------------------------------- views


def _listing(entries: list[tuple[str, int]], prefix: str) -> list[dict[str, Any]]:
    """The direct children of ``prefix`` among ``(relative path, size)`` entries."""
    children: dict[str, dict[str, Any]] = {}
    for relative, size in entries:
        if prefix:
            if not relative.startswith(prefix + "/"):
                continue
            relative = relative[len(prefix) + 1:]
        head, sep, _rest = relative.partition("/")
        if sep:
            children.setdefault(head, {"path": head, "is_dir": True})
        else:
            children[head] = {"path": head, "is_dir": False, "file_size": str(size)}
    return [children[k] for k in sorted(children)]


def list_artifacts(request: Request) -> dict[str, Any]:
    """``GET mlflow-artifacts/artifacts?path=``: the direct children of a directory."""
    registry_of(request).require(READ, None)
    path = clean_path(str(request.GET.get("path") or ""))
    registered = _registered(path) if path.startswith(REGISTERED + "/") else None
    if registered is not None:
        model, number, inner = registered
        files = _registered_files(request, model, number)
        return {"files": _listing([(f["path"], f["size"]) for f in files], inner)}
    if not path:
        return {"files": []}
    table = tables.artifacts
    rows = request.dbsession.execute(sa.select(table.c.path, table.c.size).where(
        _under(table, path)))
    return {"files": _listing([(r.path[len(path) + 1:], r.size) for r in rows], "")}


def download_artifact(request: Request) -> Response:
    """``GET mlflow-artifacts/artifacts/<path>``: a file's bytes."""
    facade = registry_of(request)
    facade.require(READ, None)
    path = clean_path(request.matchdict["path"] if isinstance(request.matchdict["path"], str)
                      else "/".join(request.matchdict["path"]))
    registered = _registered(path)
    if registered is not None:
        model, number, inner = registered
        try:
            return facade.download(model, number, inner)
        except ApiError as error:
            if error.status == 404:
                raise missing(f"Artifact '{path}' not found") from None
            raise
    row = request.dbsession.execute(sa.select(tables.artifacts).where(
        tables.artifacts.c.key == path_key(path))).first()
    if row is None:
        raise missing(f"Artifact '{path}' not found")
    return send_blob(request, row.sha256, row.size, path=posixpath.basename(path),
                     media_type="application/octet-stream")


def _path(request: Request) -> str:
    raw = request.matchdict["path"]
    return clean_path(raw if isinstance(raw, str) else "/".join(raw))


def _writable(request: Request, path: str) -> tuple[str, str]:
    """Check that the caller may write ``path``: ``(kind, owner)``."""
    facade = registry_of(request)
    facade.require(WRITE, None)
    if path.startswith(REGISTERED + "/"):
        raise MlflowError("PERMISSION_DENIED",
                          "A registered model version's files are immutable")
    kind, owner, _root = owner_of(request, path)
    return kind, owner


def _record(request: Request, path: str, sha256: str, size: int, owner: str) -> None:
    """Write the artifact's row in a transaction of its own (a streaming view's)."""
    table = tables.artifacts
    with transaction(request.registry) as db:
        mark_changed(db)
        key = path_key(path)
        found = db.execute(sa.select(table.c.key).where(table.c.key == key)
                           .with_for_update()).first()
        if found is None:
            db.execute(sa.insert(table).values(key=key, path=path, sha256=sha256, size=size,
                                               owner=owner))
        else:
            db.execute(sa.update(table).where(table.c.key == key)
                       .values(sha256=sha256, size=size, owner=owner))


def upload_artifact(request: Request) -> dict[str, Any]:
    """``PUT mlflow-artifacts/artifacts/<path>``: store a file (at most one request's
    size: ``modelreg.upload.max_put_size``; larger files come through ``mpu``)."""
    path = _path(request)
    _kind, owner = _writable(request, path)
    limit = max_put_size(request.registry.settings)
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        info = registry_of(request).store_blob(request.body_file, max_size=limit,
                                               hold=(HOLD_OWNER, hold_key(path)))
    except BlobTooLarge:
        raise _too_large(limit) from None
    _record(request, path, info.sha256, info.size, owner)
    return {}


def _too_large(limit: int) -> ApiError:
    return PayloadTooLarge(
        f"artifact too large for one request: at most {limit} bytes; set "
        "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=true in the client for larger files",
        details={"max_bytes": limit})


def delete_artifacts(request: Request) -> dict[str, Any]:
    """``DELETE mlflow-artifacts/artifacts/<path>``: a file or a directory."""
    path = _path(request)
    _writable(request, path)
    mark_changed(request.dbsession)
    table = tables.artifacts
    rows = request.dbsession.execute(sa.select(table.c.key, table.c.path).where(
        (table.c.key == path_key(path)) | _under(table, path))).all()
    facade = registry_of(request)
    for row in rows:
        facade.release_blob(HOLD_OWNER, hold_key(row.path))
        request.dbsession.execute(sa.delete(table).where(table.c.key == row.key))
    if rows:
        audit_request(request, "mlflow.artifacts_deleted", "mlflow_artifact", path,
                      before={"files": len(rows)})
    return {}


def release_owner(request: Request, owner: str) -> None:
    """Drop the artifacts of a run or logged model (their blobs go at the next gc)."""
    mark_changed(request.dbsession)
    table = tables.artifacts
    facade = registry_of(request)
    for row in request.dbsession.execute(sa.select(table.c.path).where(
            table.c.owner == owner)).all():
        facade.release_blob(HOLD_OWNER, hold_key(row.path))
    request.dbsession.execute(sa.delete(table).where(table.c.owner == owner))


def list_run_artifacts(request: Request) -> dict[str, Any]:
    """``GET /api/2.0/mlflow/artifacts/list?run_id=&path=``."""
    registry_of(request).require(READ, None)
    values = params(request)
    run_id = required(values, "run_id")
    row = request.dbsession.execute(sa.select(tables.runs.c.experiment_id).where(
        tables.runs.c.id == run_id)).first()
    if row is None:
        raise missing(f"Run '{run_id}' not found")
    root = f"{row.experiment_id}/{run_id}/artifacts"
    inner = clean_path(str(values.get("path") or ""))
    base = f"{root}/{inner}" if inner else root
    entries = [(rel, r["size"]) for rel, r in files_under(request, base)]
    files = _listing(entries, "")
    for entry in files:
        entry["path"] = f"{inner}/{entry['path']}" if inner else entry["path"]
    return {"root_uri": f"mlflow-artifacts:/{root}", "files": files}


# ------------------------------------------------------------------ multipart uploads


def mpu_create(request: Request) -> dict[str, Any]:
    """``POST mlflow-artifacts/mpu/create/<dir>``: an upload of ``num_parts`` parts, each
    ``PUT`` to the URL given (it carries its own secret, as a presigned URL does)."""
    base = _path(request)
    values = params(request)
    name = clean_path(str(required(values, "path")))
    path = f"{base}/{name}" if base else name
    _writable(request, path)
    try:
        num_parts = int(values.get("num_parts") or 1)
    except (TypeError, ValueError):
        raise invalid("num_parts must be a positive integer") from None
    if not 0 < num_parts <= 10000:
        raise invalid("num_parts must be between 1 and 10000")
    upload_id = secrets.token_hex(16)
    secret = secrets.token_urlsafe(32)
    mark_changed(request.dbsession)
    _drop_stale_uploads(request)
    request.dbsession.execute(sa.insert(tables.uploads).values(
        id=upload_id, secret_sha256=hashlib.sha256(secret.encode()).hexdigest(), path=path,
        num_parts=num_parts, created_by=registry_of(request).caller, created_at=now_ms()))
    credentials = [{
        "part_number": n,
        "url": request.route_url("mlflow.mpu_part", upload=upload_id, number=str(n),
                                 _query={"secret": secret}),
        "headers": {},
    } for n in range(1, num_parts + 1)]
    return {"upload_id": upload_id, "credentials": credentials}


#: A multipart upload neither completed nor aborted within this many milliseconds is
#: dropped (its parts released to gc) when the next one is created.
STALE_UPLOAD_MS = 24 * 3600 * 1000


def _drop_stale_uploads(request: Request) -> None:
    """Release the parts of uploads older than :data:`STALE_UPLOAD_MS` and forget them."""
    facade = registry_of(request)
    stale = request.dbsession.execute(sa.select(tables.uploads.c.id, tables.uploads.c.num_parts)
                                      .where(tables.uploads.c.created_at
                                             < now_ms() - STALE_UPLOAD_MS)).all()
    for row in stale:
        for number in range(1, row.num_parts + 1):
            facade.release_blob(HOLD_OWNER, part_key(row.id, number))
        request.dbsession.execute(sa.delete(tables.uploads).where(tables.uploads.c.id == row.id))


def _upload(request: Request, upload_id: str) -> Any:
    row = request.dbsession.execute(sa.select(tables.uploads).where(
        tables.uploads.c.id == upload_id)).first()
    if row is None:
        raise missing(f"Multipart upload '{upload_id}' not found")
    return row


def mpu_part(request: Request) -> Response:
    """``PUT mlflow-artifacts/mpu/part/<upload>/<n>?secret=``: one part's bytes (the URL
    is the credential, as S3's presigned part URLs are)."""
    upload_id = request.matchdict["upload"]
    row = _upload(request, upload_id)
    secret = str(request.GET.get("secret") or "")
    if not hmac.compare_digest(hashlib.sha256(secret.encode()).hexdigest(),
                               row.secret_sha256):
        raise MlflowError("PERMISSION_DENIED", "This part URL's secret is not valid")
    try:
        number = int(request.matchdict["number"])
    except ValueError:
        raise invalid("A part number is an integer") from None
    if not 0 < number <= row.num_parts:
        raise invalid(f"Part number {number} is outside 1..{row.num_parts}")
    limit = max_put_size(request.registry.settings)
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        info = registry_of(request).store_blob(request.body_file, max_size=limit,
                                               hold=(HOLD_OWNER, part_key(upload_id, number)))
    except BlobTooLarge:
        raise _too_large(limit) from None
    response = Response(status=200)
    response.headers["ETag"] = f'"{info.sha256}"'
    return response


class _Joined:
    """The parts of an upload read one after another as one stream."""

    def __init__(self, request: Request, upload_id: str, count: int) -> None:
        self.request = request
        self.upload_id = upload_id
        self.numbers: Iterator[int] = iter(range(1, count + 1))
        self.current: BinaryIO | None = None

    def read(self, size: int = -1) -> bytes:
        while True:
            if self.current is None:
                number = next(self.numbers, None)
                if number is None:
                    return b""
                self.current = registry_of(self.request).open_held_blob(
                    HOLD_OWNER, part_key(self.upload_id, number))
            data = self.current.read(size if size and size > 0 else 1024 * 1024)
            if data:
                return data
            self.current.close()
            self.current = None


def mpu_complete(request: Request) -> dict[str, Any]:
    """``POST mlflow-artifacts/mpu/complete/<dir>``: join the parts (in order) into the
    artifact, verified by digest, and free them."""
    base = _path(request)
    values = params(request)
    upload_id = str(required(values, "upload_id"))
    row = _upload(request, upload_id)
    name = clean_path(str(required(values, "path")))
    path = f"{base}/{name}" if base else name
    if path != row.path:
        raise invalid(f"Multipart upload '{upload_id}' is for '{row.path}', not '{path}'")
    _kind, owner = _writable(request, path)
    facade = registry_of(request)
    held = facade.held_blobs(HOLD_OWNER)
    missing_parts = [n for n in range(1, row.num_parts + 1)
                     if part_key(upload_id, n) not in held]
    if missing_parts:
        raise invalid(f"Multipart upload '{upload_id}' lacks parts {missing_parts[:20]}")
    # The ETag each part's PUT answered is its sha256: the parts the client lists must be
    # the bytes this server holds.
    for part in values.get("parts") or []:
        number = int(part.get("part_number") or 0)
        etag = str(part.get("etag") or "").strip('"')
        held_digest = held.get(part_key(upload_id, number))
        if etag and held_digest != etag:
            raise invalid(f"Part {number} of multipart upload '{upload_id}' does not hold "
                          f"the bytes whose ETag the client sent ({etag})")
    info = facade.store_blob(_Joined(request, upload_id, row.num_parts),
                             hold=(HOLD_OWNER, hold_key(path)))
    _record(request, path, info.sha256, info.size, owner)
    _drop_upload(request, upload_id, row.num_parts)
    return {}


def _drop_upload(request: Request, upload_id: str, count: int) -> None:
    """Forget a completed upload and free its parts (a streaming view: transactions of
    their own)."""
    with transaction(request.registry) as db:
        mark_changed(db)
        db.execute(sa.delete(tables.uploads).where(tables.uploads.c.id == upload_id))
    facade = registry_of(request)
    for number in range(1, count + 1):
        facade.release_blob_now(HOLD_OWNER, part_key(upload_id, number))


def mpu_abort(request: Request) -> dict[str, Any]:
    """``POST mlflow-artifacts/mpu/abort/<dir>``: drop the upload and its parts."""
    values = params(request)
    upload_id = str(required(values, "upload_id"))
    row = _upload(request, upload_id)
    _writable(request, row.path)
    facade = registry_of(request)
    mark_changed(request.dbsession)
    for number in range(1, row.num_parts + 1):
        facade.release_blob(HOLD_OWNER, part_key(upload_id, number))
    request.dbsession.execute(sa.delete(tables.uploads).where(tables.uploads.c.id == upload_id))
    return {}
