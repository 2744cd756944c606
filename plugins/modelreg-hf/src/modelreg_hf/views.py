"""The Hub's HTTP API for models, as ``huggingface_hub`` calls it (see docs/huggingface.md).

Reading: ``GET /api/models/{repo}[/revision/{rev}]`` (model info), ``.../tree/{rev}[/path]``,
``.../refs``, ``GET|HEAD /{repo}/resolve/{rev}/{path}``.  Writing: ``POST /api/repos/create``,
``.../preupload/{rev}``, ``POST /{repo}.git/info/lfs/objects/batch`` (signed upload URLs under
``/hf-lfs/``), ``.../commit/{rev}`` (NDJSON).  ``{repo}`` is ``name`` or ``org/name``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from modelreg.api import (
    WRITE,
    ApiError,
    BadRequest,
    Conflict,
    NotFound,
    Registry,
    Unprocessable,
    add_error_shape,
    add_read_only_view,
    add_route_error_shape,
    add_streaming_view,
    read_json_body,
    registry_of,
)

from . import signing
from .config import HubSettings, hub_settings
from .hub import (
    COMMIT_KEY,
    MAIN,
    branch_version,
    commit_id,
    model_of,
    render_error,
    repo_id_of,
    resolve,
)

log = logging.getLogger(__name__)

#: The owner of the blobs this plugin holds (uploads not yet in a version).
OWNER = "modelreg-hf"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: The size of an LFS pointer file (what the Hub reports as ``pointerSize``).
POINTER_SIZE = 134
#: Segments after the repo id under ``/api/models/`` (a repo id has one or two segments).
KEYWORDS = {"revision", "tree", "refs", "preupload", "commit", "paths-info", "commits",
            "xet-write-token", "xet-read-token"}
XET_MESSAGE = ("Xet storage is not served by modelreg: set HF_HUB_DISABLE_XET=1 so that "
               "huggingface_hub uploads through the LFS protocol (see docs/huggingface.md)")
LFS_MEDIA = "application/vnd.git-lfs+json"
#: The most commits ``list_repo_commits`` lists (newest first).
MAX_COMMITS = 1000
#: The views check the caller's permission themselves, through ``request.modelreg`` (the
#: model comes from a repo id, which the core's route context does not parse); the signed
#: upload URLs need none.
PUBLIC = NO_PERMISSION_REQUIRED
#: The routes whose ``GET`` (and ``HEAD``) only reads the database and answers a bounded body:
#: served outside pyramid_tm, taking read turns (``modelreg.api.add_read_only_view``;
#: docs/plugins.md).  ``hf.api_models`` answers model info, ``tree``, ``refs`` and ``commits``
#: (at most :data:`MAX_COMMITS`) on ``GET``; its writes are ``POST``s.  Not the ``resolve``
#: routes: they send a file, or a redirect the blob store makes.
READ_ONLY_ROUTES = ("hf.whoami", "hf.api_models")


def _settings(request: Request) -> HubSettings:
    return hub_settings(request.registry)


def _iso(value: Any) -> str | None:
    if not value:
        return None
    text = str(value)
    return text if text.endswith("Z") or "+" in text else text + "Z"


def _split_repo(parts: Iterable[str]) -> tuple[str, list[str]]:
    """``(repo id, the rest)`` of the segments after ``/api/models/``."""
    parts = list(parts)
    if not parts:
        raise NotFound("no repository named", code="model_not_found")
    if len(parts) >= 2 and parts[1] in KEYWORDS:
        return parts[0], parts[1:]
    if len(parts) >= 2:
        return f"{parts[0]}/{parts[1]}", parts[2:]
    return parts[0], []


def _files_of(reg: Registry, model: str, version: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(reg.list_files(model, version["number"]), key=lambda f: f["path"])


def _sha256_of(file: dict[str, Any]) -> str:
    return str(file["sha256"]).removeprefix("sha256:")


# ------------------------------------------------------------------------------- reading


def model_info(request: Request, repo_id: str, revision: str | None) -> dict[str, Any]:
    """``GET /api/models/{repo}[/revision/{rev}]``: ``sha``, ``siblings`` (with ``size`` and
    ``lfs`` when ``blobs`` is asked), dates, tags."""
    reg = registry_of(request)
    model = model_of(repo_id, _settings(request).namespace)
    document = reg.get_model(model)
    try:
        version = resolve(reg, model, revision)
    except ApiError as exc:
        if revision is not None or exc.code != "revision_not_found":
            raise
        version = None  # an empty repo: no commit yet
    blobs = str(request.params.get("blobs", "")).lower() in ("1", "true")
    siblings = []
    if version is not None:
        for file in _files_of(reg, model, version):
            sibling: dict[str, Any] = {"rfilename": file["path"]}
            if blobs:
                sha = _sha256_of(file)
                sibling.update(size=file["size"], blobId=sha[:40],
                               lfs={"size": file["size"], "sha256": sha,
                                    "pointerSize": POINTER_SIZE})
            siblings.append(sibling)
    metadata = (version or {}).get("metadata") or {}
    return {
        "_id": repo_id, "id": repo_id, "modelId": repo_id,
        "author": repo_id.partition("/")[0] if "/" in repo_id else None,
        "sha": commit_id(version) if version else None,
        "lastModified": _iso((version or document).get("updated_at")
                             or (version or document).get("created_at")),
        "createdAt": _iso(document.get("created_at")),
        "private": True, "disabled": False, "gated": False,
        "downloads": 0, "likes": 0,
        "library_name": metadata.get("library_name"),
        "pipeline_tag": metadata.get("pipeline_tag"),
        "tags": sorted(f"{k}:{v}" if v else k for k, v in (document.get("tags") or {}).items()),
        "siblings": siblings,
        "cardData": None,
        "modelreg": {"model": model, "version": version["number"] if version else None,
                     "aliases": (version or {}).get("aliases", [])},
    }


def tree(request: Request, repo_id: str, revision: str, path: str) -> list[dict[str, Any]]:
    """``GET /api/models/{repo}/tree/{rev}[/{path}]``: files and folders under ``path``
    (everything below it with ``recursive``)."""
    reg = registry_of(request)
    model = model_of(repo_id, _settings(request).namespace)
    reg.get_model(model)
    version = resolve(reg, model, revision)
    recursive = str(request.params.get("recursive", "")).lower() in ("1", "true")
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    entries: list[dict[str, Any]] = []
    folders: set[str] = set()
    for file in _files_of(reg, model, version):
        name = file["path"]
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        parents = rest.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            folder = prefix + "/".join(parents[:depth])
            if folder not in folders and (recursive or depth == 1):
                folders.add(folder)
                entries.append({"type": "directory", "path": folder,
                                "oid": hashlib.sha1(folder.encode()).hexdigest()})  # noqa: S324
        if recursive or not parents:
            entries.append(_file_entry(file))
    if prefix and not entries:
        raise NotFound(f"no file or folder {path!r} in this revision", code="entry_not_found")
    return entries


def _file_entry(file: dict[str, Any]) -> dict[str, Any]:
    sha = _sha256_of(file)
    return {"type": "file", "path": file["path"], "size": file["size"], "oid": sha[:40],
            "lfs": {"oid": sha, "size": file["size"], "pointerSize": POINTER_SIZE}}


def paths_info(request: Request, repo_id: str, revision: str) -> list[dict[str, Any]]:
    """``POST /api/models/{repo}/paths-info/{rev}`` (form field ``paths``, repeated): the
    files and folders among ``paths``; paths that are neither are left out."""
    reg = registry_of(request)
    model = model_of(repo_id, _settings(request).namespace)
    reg.get_model(model)
    version = resolve(reg, model, revision)
    asked = [str(p).strip("/") for p in request.POST.getall("paths")][:1000]
    files = {f["path"]: f for f in _files_of(reg, model, version)}
    entries = []
    for path in asked:
        if path in files:
            entries.append(_file_entry(files[path]))
        elif path and any(name.startswith(path + "/") for name in files):
            entries.append({"type": "directory", "path": path,
                            "oid": hashlib.sha1(path.encode()).hexdigest()})  # noqa: S324
    return entries


def commits(request: Request, repo_id: str, revision: str) -> list[dict[str, Any]]:
    """``GET /api/models/{repo}/commits/{rev}`` (``list_repo_commits``): the ready versions
    up to the revision's, newest first; the title is the commit message or description."""
    reg = registry_of(request)
    model = model_of(repo_id, _settings(request).namespace)
    reg.get_model(model)
    head = resolve(reg, model, revision)
    versions: list[dict[str, Any]] = []
    token = None
    while len(versions) < MAX_COMMITS:
        page = reg.search_versions(
            model, filter=f"status = 'ready' AND number <= {head['number']}",
            order_by="number desc", page_size=100, page_token=token)
        versions += page["versions"]
        token = page["next_page_token"]
        if not token:
            break
    answer = []
    for version in versions[:MAX_COMMITS]:
        commit = ((version.get("metadata") or {}).get("huggingface") or {}).get("commit") or {}
        answer.append({
            "id": commit_id(version),
            "authors": [{"user": version.get("created_by") or "unknown"}],
            "date": _iso(version.get("finalized_at") or version.get("created_at")),
            "title": commit.get("message") or version.get("description") or
                     f"version {version['number']}",
            "message": commit.get("description") or "",
        })
    return answer


def refs(request: Request, repo_id: str) -> dict[str, Any]:
    """``GET /api/models/{repo}/refs``: ``main`` and every alias as branches."""
    reg = registry_of(request)
    model = model_of(repo_id, _settings(request).namespace)
    reg.get_model(model)
    branches = []
    aliases = sorted(reg.list_aliases(model), key=lambda a: a["alias"])
    if MAIN not in {a["alias"] for a in aliases}:
        head = branch_version(reg, model, MAIN)
        if head is not None:
            branches.append({"name": MAIN, "ref": f"refs/heads/{MAIN}",
                             "targetCommit": commit_id(head)})
    for alias in aliases:
        version = reg.get_version(model, alias["alias"])
        branches.append({"name": alias["alias"], "ref": f"refs/heads/{alias['alias']}",
                         "targetCommit": commit_id(version)})
    return {"branches": branches, "converts": [], "tags": [], "pullRequests": []}


def resolve_file(request: Request) -> Response:
    """``GET|HEAD /{repo}/resolve/{rev}/{path}``: the file, with ``X-Repo-Commit``,
    ``ETag`` (the sha256, which names the client's cached blob), ``X-Linked-Etag``,
    ``X-Linked-Size``, ``Range``; a redirect where the blob store offers one."""
    match = request.matchdict
    repo_id = f"{match['org']}/{match['name']}" if "org" in match else match["name"]
    path = "/".join(match["path"])
    if not path:
        raise NotFound("no file named", code="entry_not_found")
    reg = registry_of(request)
    model = model_of(repo_id, _settings(request).namespace)
    reg.get_model(model)
    version = resolve(reg, model, match["revision"])
    commit = commit_id(version)
    request.environ[COMMIT_KEY] = commit
    file = reg.get_file(model, version["number"], path)
    response = reg.download(model, version["number"], path)
    sha = _sha256_of(file)
    response.headers["X-Repo-Commit"] = commit or ""
    response.headers["X-Linked-Etag"] = f'"{sha}"'
    response.headers["X-Linked-Size"] = str(file["size"])
    return response


# ------------------------------------------------------------------------------- writing


def _hold_key(model: str, oid: str, expires: int) -> str:
    """The hold of an uploaded file: ``lfs:<model>:<sha256>:<expiry of its upload URL>``."""
    return f"lfs:{model.lower()}:{oid}:{expires}"


def _part_key(model: str, oid: str, expires: int, number: int) -> str:
    """The hold of a part: ``part:<model>:<sha256>:<expiry>:<number>``."""
    return f"part:{model.lower()}:{oid}:{expires}:{number}"


def _file_holds(held: dict[str, str], model: str, oid: str) -> list[str]:
    """The holds of the file ``oid`` uploaded for ``model``, and of its parts."""
    prefixes = (f"lfs:{model.lower()}:{oid}:", f"part:{model.lower()}:{oid}:")
    return [key for key in held if key.startswith(prefixes)]


def _release_abandoned(reg: Registry, held: dict[str, str], grace: int) -> dict[str, str]:
    """Release the holds of uploads whose URL expired more than ``grace`` seconds ago (never
    committed: a commit releases what it uses); the holds that remain."""
    now = time.time()
    kept = {}
    for key, sha in held.items():
        fields = key.split(":")
        try:
            expires = int(fields[3])
        except (IndexError, ValueError):
            expires = 0
        if expires + grace < now:
            reg.release_blob(OWNER, key)
        else:
            kept[key] = sha
    return kept


def create_repo(request: Request) -> dict[str, Any]:
    """``POST /api/repos/create``: a model (409 when it exists, which ``exist_ok`` takes)."""
    body = read_json_body(request)
    kind = body.get("type") or "model"
    if kind != "model":
        raise BadRequest(f"modelreg serves model repositories only, not {kind!r}",
                         code="unsupported_repo_type")
    name, organization = body.get("name"), body.get("organization")
    if not isinstance(name, str) or not (organization is None or isinstance(organization, str)):
        raise Unprocessable("name (and organization) must be strings", code="invalid_body")
    namespace = _settings(request).namespace
    model = model_of(f"{organization}/{name}" if organization else name, namespace)
    repo_id = repo_id_of(model, namespace)
    url = f"{request.application_url}/{repo_id}"
    try:
        registry_of(request).create_model(
            model, description="created through the Hugging Face Hub API")
    except ApiError as exc:
        if exc.status == 409:  # the client's exist_ok reads the url of the 409 answer
            exc.details = {**exc.details, "url": url}
        raise
    return {"url": url, "name": repo_id, "id": repo_id}


def preupload(request: Request, repo_id: str, revision: str) -> dict[str, Any]:
    """``POST /api/models/{repo}/preupload/{rev}``: every non-empty file goes by LFS (so
    that no file's bytes travel inside a commit); ``oid`` is the sha256 the branch holds
    at that path, which lets the client skip unchanged files.  A streaming view: it stores
    the empty blob that empty files are made of."""
    reg = registry_of(request)
    model = model_of(repo_id, _settings(request).namespace)
    reg.require(WRITE, model)
    body = read_json_body(request)
    files = body.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(
            f.get("path"), str) and isinstance(f.get("size"), int) for f in files):
        raise Unprocessable("files must be a list of {path, size, sample}", code="invalid_body")
    head = branch_version(reg, model, revision)
    existing = {f["path"]: _sha256_of(f) for f in _files_of(reg, model, head)} if head else {}
    answer = []
    for entry in files:
        empty = entry["size"] == 0
        if empty:
            expires = int(time.time()) + _settings(request).upload_url_ttl
            reg.store_blob(io.BytesIO(b""), sha256=EMPTY_SHA256, max_size=0,
                           hold=(OWNER, _hold_key(model, EMPTY_SHA256, expires)))
        answer.append({"path": entry["path"], "uploadMode": "regular" if empty else "lfs",
                       "shouldIgnore": False, "oid": existing.get(entry["path"])})
    return {"files": answer, "commitOid": commit_id(head) if head else None}


def lfs_batch(request: Request, repo_id: str) -> Response:
    """``POST /{repo}.git/info/lfs/objects/batch``: for each object the registry does not
    hold yet, a signed upload URL bound to its sha256 and size (the multipart transfer,
    parts of ``modelreg.hf.part_size`` bytes, above that size)."""
    reg = registry_of(request)
    model = model_of(repo_id, _settings(request).namespace)
    reg.require(WRITE, model)
    body = read_json_body(request)
    if body.get("operation") != "upload":
        raise BadRequest("modelreg serves the LFS batch API for uploads only; downloads go "
                         "through /resolve", code="unsupported_operation")
    objects = body.get("objects")
    if not isinstance(objects, list):
        raise Unprocessable("objects must be a list", code="invalid_body")
    config = _settings(request)
    held = _release_abandoned(reg, reg.held_blobs(OWNER), config.hold_grace)
    base = request.application_url
    expires = int(time.time()) + config.upload_url_ttl
    answers = []
    multipart = False
    for item in objects:
        oid = item.get("oid") if isinstance(item, dict) else None
        size = item.get("size") if isinstance(item, dict) else None
        if (not isinstance(oid, str) or len(oid) != 64
                or any(c not in "0123456789abcdef" for c in oid)
                or not isinstance(size, int) or size < 0):
            answers.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                            "error": {"code": 422, "message": "oid must be a sha256 in "
                                      "lowercase hex and size a non-negative integer"}})
            continue
        if any(key.startswith("lfs:") for key in _file_holds(held, model, oid)):
            answers.append({"oid": oid, "size": size})  # already uploaded: nothing to send
            continue
        parts = 1 if size <= config.part_size else -(-size // config.part_size)
        _warn_of_the_process_secret(config)
        token = signing.sign(config.upload_secret,
                             signing.UploadGrant(model, oid, size, parts, expires))
        if parts == 1:
            action: dict[str, Any] = {"href": f"{base}/hf-lfs/upload/{token}"}
        else:
            multipart = True
            header = {str(n): f"{base}/hf-lfs/part/{token}/{n}" for n in range(1, parts + 1)}
            action = {"href": f"{base}/hf-lfs/complete/{token}",
                      "header": {"chunk_size": str(config.part_size), **header}}
        answers.append({"oid": oid, "size": size, "authenticated": True,
                        "actions": {"upload": {**action, "expires_in": config.upload_url_ttl}}})
    response = Response(json_body={"transfer": "multipart" if multipart else "basic",
                                   "objects": answers, "hash_algo": "sha256"})
    response.content_type = LFS_MEDIA
    return response


def _grant(request: Request) -> signing.UploadGrant:
    return signing.verify(_settings(request).upload_secret, request.matchdict["token"])


def _length(request: Request, expected: int) -> int:
    length = request.content_length
    if length is None:
        raise ApiError("send Content-Length", code="length_required", status=411)
    if length != expected:
        raise BadRequest(f"this upload URL takes {expected} bytes, not {length}",
                         code="size_mismatch", details={"size": expected})
    return length


def lfs_upload(request: Request) -> Response:
    """``PUT /hf-lfs/upload/{token}`` (no token needed: the URL is signed): store the bytes,
    verified against the sha256 the URL names, held until a commit uses them."""
    grant = _grant(request)
    if grant.parts != 1:
        raise BadRequest("this file goes in parts", code="multipart_required")
    _length(request, grant.size)
    registry_of(request).store_blob(request.body_file_raw, sha256=grant.oid,
                                    max_size=grant.size,
                                    hold=(OWNER, _hold_key(grant.model, grant.oid,
                                                           grant.expires)))
    return Response(status=200, json_body={})


def _part_size(grant: signing.UploadGrant, number: int, part_size: int) -> int:
    return min(part_size, grant.size - part_size * (number - 1))


def lfs_part(request: Request) -> Response:
    """``PUT /hf-lfs/part/{token}/{n}``: part ``n`` of a multipart transfer; its ``ETag``
    is the part's sha256."""
    grant = _grant(request)
    config = _settings(request)
    try:
        number = int(request.matchdict["number"])
    except ValueError:
        number = 0
    if not 1 <= number <= grant.parts:
        raise NotFound(f"this upload has parts 1 to {grant.parts}", code="part_not_found")
    _length(request, _part_size(grant, number, config.part_size))
    info = registry_of(request).store_blob(
        request.body_file_raw, max_size=_part_size(grant, number, config.part_size),
        hold=(OWNER, _part_key(grant.model, grant.oid, grant.expires, number)))
    response = Response(status=200, json_body={})
    response.headers["ETag"] = f'"{info.sha256}"'
    return response


class _Joined(io.RawIOBase):
    """The parts' streams read one after the other."""

    def __init__(self, streams: list[Callable[[], BinaryIO]]) -> None:
        self._pending = list(streams)
        self._current: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._current is None:
                if not self._pending:
                    return 0
                self._current = self._pending.pop(0)()
            data = self._current.read(len(buffer))
            if data:
                buffer[:len(data)] = data
                return len(data)
            self._current.close()
            self._current = None


def lfs_complete(request: Request) -> Response:
    """``POST /hf-lfs/complete/{token}``: join the parts (each named with the ``ETag`` it
    answered) into the file, verified against the URL's sha256 and size."""
    grant = _grant(request)
    body = read_json_body(request)
    parts = body.get("parts")
    if body.get("oid") != grant.oid or not isinstance(parts, list) or len(parts) != grant.parts:
        raise BadRequest(f"complete this upload with the oid {grant.oid} and its "
                         f"{grant.parts} parts", code="invalid_parts")
    reg = registry_of(request)
    held = reg.held_blobs(OWNER)
    for index, part in enumerate(sorted(parts, key=lambda p: p.get("partNumber", 0)), 1):
        key = _part_key(grant.model, grant.oid, grant.expires, index)
        etag = str(part.get("etag", "")).strip('"')
        if part.get("partNumber") != index or held.get(key) != etag:
            raise BadRequest(f"part {index} was not uploaded with that ETag",
                             code="invalid_parts", details={"part": index})
    keys = [_part_key(grant.model, grant.oid, grant.expires, n)
            for n in range(1, grant.parts + 1)]
    stream = _Joined([(lambda key=key: reg.open_held_blob(OWNER, key)) for key in keys])
    reg.store_blob(io.BufferedReader(stream), sha256=grant.oid, max_size=grant.size,
                   hold=(OWNER, _hold_key(grant.model, grant.oid, grant.expires)))
    return Response(status=200, json_body={})


def _commit_lines(request: Request) -> list[dict[str, Any]]:
    limit = _settings(request).max_commit_body
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(f"a commit's body has at most {limit} bytes", code="payload_too_large",
                       status=413)
    data = request.body_file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(f"a commit's body has at most {limit} bytes", code="payload_too_large",
                       status=413)
    lines = []
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            raise BadRequest("the commit body is NDJSON: one JSON object per line",
                             code="invalid_body") from None
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            raise BadRequest("each line of a commit is {\"key\", \"value\"}", code="invalid_body")
        lines.append(item)
    if not lines or lines[0].get("key") != "header":
        raise BadRequest("a commit starts with its header line", code="invalid_body")
    return lines


def commit(request: Request, repo_id: str, revision: str) -> dict[str, Any]:
    """``POST /api/models/{repo}/commit/{branch}``: a new version holding the branch head's
    files (linked by digest) plus and minus the commit's operations, its message in the
    version's metadata (``huggingface.commit``), finalized; the commit waits (at most
    ``modelreg.hf.commit_wait`` seconds) for scanning, answers a rejection as an error, and
    moves the branch's alias once the version is ready."""
    reg = registry_of(request)
    model = model_of(repo_id, _settings(request).namespace)
    reg.require(WRITE, model)
    lines = _commit_lines(request)
    header = lines[0]["value"]
    summary = str(header.get("summary") or "")
    description = str(header.get("description") or "")
    parent_commit = header.get("parentCommit")
    head = branch_version(reg, model, revision)
    head_commit = commit_id(head) if head else None
    if parent_commit is not None and parent_commit != head_commit:
        raise Conflict(f"the branch {revision!r} is at {head_commit}, no longer at the parent "
                       f"commit {parent_commit}: fetch it and commit again",
                       code="parent_not_head", status=412)
    files = {f["path"]: ("link", _sha256_of(f)) for f in _files_of(reg, model, head)} \
        if head else {}
    for line in lines[1:]:
        key, value = line.get("key"), line["value"]
        path = value.get("path")
        if not isinstance(path, str) or not path:
            raise BadRequest(f"a {key} line needs a path", code="invalid_body")
        if key == "lfsFile":
            oid = str(value.get("oid", ""))
            files[path] = ("held", oid)
        elif key == "file":
            try:
                content = base64.b64decode(str(value.get("content", "")), validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(f"{path}: content is not base64", code="invalid_body") from None
            if content:
                raise Unprocessable(f"{path}: modelreg takes file contents by LFS only (the "
                                    "preupload answer said so)", code="regular_file_refused")
            files[path] = ("held", EMPTY_SHA256)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise NotFound(f"A file with this name doesn't exist: {path}",
                               code="entry_not_found")
        elif key == "deletedFolder":
            folder = path.rstrip("/") + "/"
            gone = [p for p in files if p.startswith(folder)]
            if not gone:
                raise NotFound(f"A file with this name doesn't exist: {path}",
                               code="entry_not_found")
            for name in gone:
                del files[name]
        else:
            raise Unprocessable(f"modelreg does not take {key!r} operations in a commit",
                                code="unsupported_operation")
    metadata = {"huggingface": {"commit": {"message": summary, "description": description,
                                           "parent": head_commit, "branch": revision}}}
    version = reg.create_version(model, description=summary, metadata=metadata)
    number = version["number"]
    held = reg.held_blobs(OWNER)
    used: set[str] = set()
    for path, (how, sha) in sorted(files.items()):
        holds = _file_holds(held, model, sha) if how == "held" else []
        uploaded = [key for key in holds if key.startswith("lfs:")]
        if uploaded:
            reg.link_held_blob(model, number, path, OWNER, uploaded[0])
            used.update(holds)
            continue
        try:
            reg.link_file(model, number, path, sha)
        except ApiError as exc:
            if exc.code == "blob_not_found":
                raise BadRequest(f"{path}: the content sha256:{sha} was not uploaded (ask the "
                                 "LFS batch API for an upload URL first)",
                                 code="lfs_object_missing") from None
            raise
    done = reg.finalize_version(model, number)
    if done["status"] == "validating":
        done = reg.commit_and_wait(model, number, timeout=_settings(request).commit_wait)
    if done["status"] == "rejected":
        problems = "; ".join(p.get("message", "") for p in done.get("problems") or [])
        raise Unprocessable(f"version {number} was rejected: {problems}",
                            code="version_rejected", details={"version": number})
    if done["status"] != "ready":
        raise Conflict(f"version {number} is still {done['status']} after "
                       f"{_settings(request).commit_wait}s; the branch {revision!r} was not "
                       "moved (see the version in the registry)", code="validation_pending",
                       details={"version": number})
    if revision != MAIN or MAIN in {a["alias"] for a in reg.list_aliases(model)}:
        try:
            reg.move_alias(model, revision, number,
                           expected=head["number"] if head else None)
        except ApiError as exc:
            if exc.code != "alias_moved":
                raise
            raise Conflict(f"the branch {revision!r} moved while this commit was validated: "
                           f"version {number} holds the commit but the branch does not; "
                           "commit again on the new head", code="branch_moved",
                           details={"version": number}) from None
    for key in sorted(used):
        reg.release_blob(OWNER, key)
    cid = commit_id(done)
    namespaced = repo_id_of(model, _settings(request).namespace)
    return {"commitUrl": f"{request.application_url}/{namespaced}/commit/{cid}",
            "commitOid": cid, "success": True, "pullRequestUrl": None,
            "commitMessage": summary, "modelreg": {"model": model, "version": number}}


# ------------------------------------------------------------------------------ dispatch


def api_models(request: Request) -> Any:
    """Every route under ``/api/models/``: the repo id, then what is asked."""
    repo_id, rest = _split_repo(request.matchdict["rest"])
    method = request.method
    what = rest[0] if rest else None
    if what is None and method == "GET":
        return model_info(request, repo_id, None)
    if what == "revision" and len(rest) == 2 and method == "GET":
        return model_info(request, repo_id, rest[1])
    if what == "tree" and len(rest) >= 2 and method == "GET":
        return tree(request, repo_id, rest[1], "/".join(rest[2:]))
    if what == "refs" and len(rest) == 1 and method == "GET":
        return refs(request, repo_id)
    if what == "paths-info" and len(rest) == 2 and method == "POST":
        return paths_info(request, repo_id, rest[1])
    if what == "commits" and len(rest) == 2 and method == "GET":
        return commits(request, repo_id, rest[1])
    if what == "preupload" and len(rest) == 2 and method == "POST":
        return preupload(request, repo_id, rest[1])
    if what == "commit" and len(rest) == 2 and method == "POST":
        return commit(request, repo_id, rest[1])
    if what in ("xet-write-token", "xet-read-token"):
        raise ApiError(XET_MESSAGE, code="xet_not_served", status=501)
    raise NotFound(f"modelreg does not serve {method} {request.path_info}", code="not_found")


def lfs_batch_view(request: Request) -> Response:
    """``POST /{repo}.git/info/lfs/objects/batch``."""
    match = request.matchdict
    repo_id = f"{match['org']}/{match['name']}" if "org" in match else match["name"]
    return lfs_batch(request, repo_id)


def preupload_view(request: Request) -> dict[str, Any]:
    """``POST /api/models/{repo}/preupload/{rev}`` (a streaming view of its own)."""
    match = request.matchdict
    repo_id = f"{match['org']}/{match['name']}" if "org" in match else match["name"]
    return preupload(request, repo_id, match["revision"])


def whoami(request: Request) -> dict[str, Any]:
    """``GET /api/whoami-v2``: the caller, as the Hub describes a user."""
    me = registry_of(request).whoami()
    if me is None:
        raise ApiError("authentication required: send 'Authorization: Bearer <token>'",
                       code="unauthorized", status=401)
    return {"type": "user", "name": me["name"], "fullname": me["name"], "orgs": [],
            "auth": {"type": "access_token"}, "isPro": False}


def validate_yaml(request: Request) -> dict[str, Any]:
    """``POST /api/validate-yaml``: model cards are not checked (no errors, no warnings)."""
    read_json_body(request)
    return {"errors": [], "warnings": []}


_warned_of_the_process_secret = False


def _warn_of_the_process_secret(config: HubSettings) -> None:
    """Log once per process, when it first signs an upload URL, that the key is this
    process's own: said where it matters (a server taking uploads), not by every CLI
    command that loads the plugin."""
    global _warned_of_the_process_secret
    if config.upload_secret_set or _warned_of_the_process_secret:
        return
    _warned_of_the_process_secret = True
    log.warning("modelreg-hf: modelreg.hf.upload_secret is not set: LFS upload URLs are "
                "signed with a key of this process only (set it when several processes "
                "serve the registry; docs/huggingface.md)")


def includeme(config: Configurator) -> None:
    """The routes and views; errors in the Hub's shape on all of them."""
    hub_settings(config.registry)  # parsed once; a wrong setting stops start-up
    for name, pattern in (("hf.preupload", "/api/models/{name}/preupload/{revision}"),
                          ("hf.preupload_org", "/api/models/{org}/{name}/preupload/{revision}")):
        config.add_route(name, pattern)
        config.add_view(preupload_view, route_name=name, request_method="POST",
                        renderer="json", permission=PUBLIC)
        add_route_error_shape(config, name, render_error)
        add_streaming_view(config, name, "POST")  # stores the empty blob empty files are
    routes: list[tuple[str, str, Any, Any, str | None]] = [
        ("hf.whoami", "/api/whoami-v2", whoami, "GET", "json"),
        ("hf.validate_yaml", "/api/validate-yaml", validate_yaml, "POST", "json"),
        ("hf.create_repo", "/api/repos/create", create_repo, "POST", "json"),
        ("hf.lfs_upload", "/hf-lfs/upload/{token}", lfs_upload, "PUT", None),
        ("hf.lfs_part", "/hf-lfs/part/{token}/{number}", lfs_part, "PUT", None),
        ("hf.lfs_complete", "/hf-lfs/complete/{token}", lfs_complete, "POST", None),
        ("hf.api_models", "/api/models/*rest", api_models, ("GET", "POST", "PUT", "DELETE"),
         "json"),
    ]
    for name, pattern, view, method, renderer in routes:
        config.add_route(name, pattern)
        config.add_view(view, route_name=name, request_method=method, renderer=renderer,
                        permission=PUBLIC)
        add_route_error_shape(config, name, render_error)
    for name, pattern in (("hf.lfs_batch", "/{name}.git/info/lfs/objects/batch"),
                          ("hf.lfs_batch_org", "/{org}/{name}.git/info/lfs/objects/batch")):
        config.add_route(name, pattern)
        config.add_view(lfs_batch_view, route_name=name, request_method="POST",
                        permission=PUBLIC)
        add_route_error_shape(config, name, render_error)
    for name, pattern in (("hf.resolve", "/{name}/resolve/{revision}/*path"),
                          ("hf.resolve_org", "/{org}/{name}/resolve/{revision}/*path")):
        config.add_route(name, pattern, request_method=("GET", "HEAD"))
        config.add_view(resolve_file, route_name=name, request_method=("GET", "HEAD"),
                        permission=PUBLIC)
        add_route_error_shape(config, name, render_error)
    for name in READ_ONLY_ROUTES:
        add_read_only_view(config, name, "GET")
    add_streaming_view(config, "hf.lfs_upload", "PUT")
    add_streaming_view(config, "hf.lfs_part", "PUT")
    add_streaming_view(config, "hf.lfs_complete", "POST")
    add_error_shape(config, "/hf-lfs", render_error)
