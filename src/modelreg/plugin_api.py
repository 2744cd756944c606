"""The registry as a plugin's view sees it: :class:`Registry` (``request.modelreg``).

Front-end plugins (a web UI, an MLflow- or Hub-compatible API) serve other protocols over the
same models, versions, files and aliases as the REST API.  Every method here goes through
the same services as the REST views (:mod:`modelreg.registry.views`,
:mod:`modelreg.files.views`, :mod:`modelreg.security.views`), so that grants, audit, the
outbox, the policy, validation and scanning apply alike, and checks the caller's permission
the way those views do: 401 for an anonymous caller, 404 (the "no such model" answer) for a
caller who may not read the model, 403 otherwise.  Methods return the plain documents the
REST API answers (dicts), never ORM objects.

Public through :mod:`modelreg.api` (``registry_of(request)``); see ``docs/plugins.md``.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any, BinaryIO

import sqlalchemy as sa
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from . import keys
from .db import transaction
from .errors import ApiError, Conflict, Forbidden, NotFound, PayloadTooLarge, Unauthorized
from .files.download import send_blob
from .files.paths import check_new_path
from .files.services import (
    file_json,
    media_type,
    parse_hex_digest,
    touch_blob,
    upload_json,
    upload_not_found,
)
from .models import Alias, Blob, BlobHold, File, Model, ScanFinding, Version, utcnow
from .models.files import HOLD_KEY_LENGTH, HOLD_OWNER_LENGTH
from .names import normalize_name
from .permissions import ADMIN, READ, WRITE
from .policy import check_upload, policy_rules
from .scanning import finding_json
from .security.access import format_scopes, parse_scopes
from .security.policy import ModelContext, denial, readable_models, require, security_policy
from .security.tokens import TOKEN_PREFIX, authenticate_token
from .types import BlobInfo


def require_alias_admin(request: Request, model: str, alias: str) -> None:
    """Setting, moving or deleting a protected alias (``modelreg.policy.protected_aliases``)
    needs ``admin`` on the model, as the security policy decides it: 401, 404 or 403
    ``protected_alias`` otherwise (the REST views and :class:`Registry` alike)."""
    if not policy_rules(request.registry.settings).is_protected(alias):
        return
    if request.has_permission(ADMIN, ModelContext(model)):
        return
    error = denial(request, ADMIN, model)
    if isinstance(error, Forbidden):
        error = Forbidden(
            f"alias {alias!r} is protected: only a caller with admin on the model may set, "
            f"move or delete it ({error.message})",
            code="protected_alias",
            details={**error.details, "alias": alias, "reason": error.code},
        )
    raise error


def token_of(request: Request) -> str | None:
    """The API token a client sent in the header its protocol uses, or ``None``.

    ``Authorization: Bearer mr_…`` (modelreg, the Hugging Face Hub's clients) and
    ``Authorization: Basic`` with the token as the password, any user name (MLflow's
    clients with ``MLFLOW_TRACKING_PASSWORD``, git).  The core's security policy accepts
    both, so a view rarely needs this; it is for protocols that carry tokens elsewhere.
    """
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        token = credentials
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        token = decoded.partition(":")[2]
    else:
        return None
    return token if token.startswith(TOKEN_PREFIX) else None


class Registry:
    """The registry as the caller of ``request`` may use it (``request.modelreg``).

    Reads and writes run in the request's transaction (``pyramid_tm``: committed when the
    view returns, aborted when it raises), as the REST views' do.  Upload sessions and
    :meth:`store_blob` write in transactions of their own: call them from a view registered
    with :func:`modelreg.api.add_streaming_view`, as the core's upload views are.

    :param request: the current request.
    """

    def __init__(self, request: Request) -> None:
        self.request = request

    # ------------------------------------------------------------------ permissions

    @property
    def caller(self) -> str | None:
        """The caller's principal name; ``None`` when anonymous."""
        return self.request.authenticated_userid

    def allows(self, permission: str, model: str | None) -> bool:
        """Whether the caller holds ``permission`` on ``model`` (``None``: the registry)."""
        return bool(self.request.has_permission(permission, ModelContext(model)))

    def require(self, permission: str, model: str | None) -> None:
        """Raise the REST API's refusal (401, 404 or 403) unless the caller holds
        ``permission`` (:data:`modelreg.api.READ`, ``WRITE``, ``ADMIN``) on ``model``."""
        if model is None:
            if not self.allows(permission, None):
                raise denial(self.request, permission, None)
            return
        # As the REST views' refusals (security.policy.forbidden_view): a model the caller
        # may not read answers exactly "no such model".
        require(self.request, permission, model, hide_model=True)

    @property
    def _registry(self) -> Any:
        return self.request.registry_service

    @property
    def _files(self) -> Any:
        return self.request.file_service

    # ------------------------------------------------------------------------ models

    def search_models(self, *, filter: str | None = None, order_by: str | None = None,
                      page_size: int | str | None = None, page_token: str | None = None
                      ) -> dict[str, Any]:
        """A page of the models the caller may read: ``{"models", "next_page_token"}``,
        with the filter language and paging of ``GET /api/v1/models``."""
        models, token = self._registry.list_models(
            filter_text=filter, order_by=order_by,
            page_size=None if page_size is None else str(page_size), page_token=page_token,
            visible=readable_models(self.request))
        return {"models": models, "next_page_token": token}

    def get_model(self, name: str) -> dict[str, Any]:
        """The model's document (``GET /api/v1/models/{name}``)."""
        self.require(READ, name)
        service = self._registry
        return service.model_json(service.get_model(name))

    def create_model(self, name: str, *, description: str = "",
                     tags: dict[str, str] | None = None) -> dict[str, Any]:
        """Create a model (needs ``write`` on the name); its document."""
        # The name comes from the caller, so a refusal reveals nothing: 403, as the REST
        # API answers a creation.
        require(self.request, WRITE, name)
        service = self._registry
        model = service.create_model(name, description, dict(tags or {}))
        return service.model_json(model, new=True)

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        """Set a tag on a model."""
        self.require(WRITE, name)
        self._registry.set_model_tag(name, key, value)

    def delete_model_tag(self, name: str, key: str) -> None:
        """Delete a tag of a model (404 when it has none of that key)."""
        self.require(WRITE, name)
        self._registry.delete_model_tag(name, key)

    def update_model(self, name: str, *, new_name: str | None = None,
                     description: str | None = None) -> dict[str, Any]:
        """Rename a model (``admin`` on the old and the new name, as ``PATCH
        /api/v1/models/{name}``) and/or change its description (``write``); its document."""
        self.require(WRITE, name)
        service = self._registry
        if new_name is not None and new_name != service.get_model(name).name:
            require(self.request, ADMIN, name)
            require(self.request, ADMIN, new_name)
        return service.model_json(service.update_model(name, new_name=new_name,
                                                       description=description))

    def delete_model(self, name: str) -> None:
        """Delete a model with all its versions and aliases (needs ``admin`` on it)."""
        self.require(ADMIN, name)
        self._registry.delete_model(name)

    # ---------------------------------------------------------------------- versions

    def search_versions(self, model: str, *, filter: str | None = None,
                        order_by: str | None = None, page_size: int | str | None = None,
                        page_token: str | None = None) -> dict[str, Any]:
        """A page of a model's versions: ``{"versions", "next_page_token"}``."""
        self.require(READ, model)
        versions, token = self._registry.list_versions(
            model, filter_text=filter, order_by=order_by,
            page_size=None if page_size is None else str(page_size), page_token=page_token)
        return {"versions": versions, "next_page_token": token}

    def get_version(self, model: str, ref: str | int) -> dict[str, Any]:
        """A version by number, alias, ``latest`` or ``sha256:<digest>``."""
        self.require(READ, model)
        return self._registry.version_document(model, str(ref))

    def find_version(self, model: str, digest_prefix: str) -> dict[str, Any] | None:
        """The ready version whose manifest digest starts with ``digest_prefix`` (at least
        12 lowercase hex characters, without ``sha256:``), or ``None``; the newest when more
        than one matches.  For protocols that name versions by a shortened digest (the
        Hugging Face Hub's 40-character commit ids)."""
        self.require(READ, model)
        prefix = digest_prefix.lower()
        if len(prefix) < 12 or len(prefix) > 64 or any(c not in "0123456789abcdef"
                                                        for c in prefix):
            return None
        number = self.request.dbsession.scalar(
            sa.select(Version.number)
            .join(Model, Model.id == Version.model_id)
            .where(Model.normalized_name == normalize_name(model),
                   Version.status == "ready",
                   Version.digest.like(f"sha256:{prefix}%"))
            .order_by(Version.number.desc()).limit(1))
        return None if number is None else self.get_version(model, number)

    def commit_and_wait(self, model: str, ref: str | int, *, timeout: float,
                        interval: float = 0.2) -> dict[str, Any]:
        """Commit the request's transaction so far, then wait up to ``timeout`` seconds
        while the version is ``validating`` (the worker scans it): its document, whose
        ``status`` is ``ready``, ``rejected`` or still ``validating``.  What the view
        writes afterwards lands in a new transaction, committed when the view returns; the
        request is not retried after the first commit (a conflict is then an error).

        For protocols whose clients expect a write to be usable when it answers (the
        Hugging Face Hub's commit); the REST API answers ``202`` and lets clients poll.
        """
        tm = self.request.tm
        tm.commit()
        # What is committed must not be written again: no retry of this request from here
        # (pyramid_retry's last attempt, modelreg.db.retry_activate_hook).
        environ = self.request.environ
        if environ.get("retry.attempt") is not None:
            environ["retry.attempts"] = environ["retry.attempt"] + 1
        deadline = time.monotonic() + timeout
        while True:
            tm.begin()
            document = self.get_version(model, ref)
            if document.get("status") != "validating" or time.monotonic() >= deadline:
                return document
            # No transaction while waiting: on SQLite a writer's holds the database's write
            # lock, which the worker concluding the scan needs.
            tm.abort()
            time.sleep(interval)

    def version_sizes(self, model: str, numbers: list[int] | tuple[int, ...]
                      ) -> dict[int, dict[str, int]]:
        """``{number: {"files", "size"}}``: how many files each of the versions ``numbers``
        holds and their bytes in all, in one statement (a versions table's size column);
        versions without files are absent."""
        self.require(READ, model)
        if not numbers:
            return {}
        model_id = self._registry.get_model(model).id
        rows = self.request.dbsession.execute(
            sa.select(Version.number, sa.func.count(File.id), sa.func.sum(File.size))
            .join(File, File.version_id == Version.id)
            .where(Version.model_id == model_id, Version.number.in_(list(numbers)))
            .group_by(Version.number))
        return {number: {"files": int(count), "size": int(size or 0)}
                for number, count, size in rows}

    def create_version(self, model: str, *, description: str = "",
                       metadata: dict[str, Any] | None = None,
                       lineage: dict[str, Any] | None = None,
                       tags: dict[str, str] | None = None,
                       number: int | None = None) -> dict[str, Any]:
        """Create a draft version; its document.

        :param number: for importers only (global admins: 403 otherwise): the number the
            version gets, at or above the model's counter, which then moves past it; the
            numbers skipped stay unused, as those of deleted versions do.  A number below
            the counter is ``409 version_number_taken`` (numbers are never reused).
        """
        self.require(WRITE, model)
        service = self._registry
        if number is not None:
            self._raise_counter(model, number)
        version = service.create_version(model, description=description,
                                         metadata=dict(metadata or {}),
                                         lineage=dict(lineage or {}), tags=dict(tags or {}))
        return service.version_json(version)

    def _raise_counter(self, model: str, number: int) -> None:
        """Move ``model``'s version counter up to ``number`` (global admins only)."""
        self.require(ADMIN, None)
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ApiError("a version number is a positive integer",
                           code="invalid_version_number", status=422,
                           details={"number": number})
        row = self._registry.get_model(model, lock=True)
        table = Model.__table__
        db = self.request.dbsession
        counter = db.scalar(sa.select(table.c.next_version).where(table.c.id == row.id))
        if number < counter:
            raise Conflict(f"version numbers of {row.name!r} below {counter} are taken or "
                           f"were used: {number} cannot be created",
                           code="version_number_taken",
                           details={"model": row.name, "number": number,
                                    "next_version": counter})
        db.execute(sa.update(table).where(table.c.id == row.id).values(next_version=number))
        db.expire(row, ["next_version"])

    def update_version(self, model: str, ref: str | int, *,
                       description: str | None = None) -> dict[str, Any]:
        """Change a version's description (any state); its document."""
        self.require(WRITE, model)
        service = self._registry
        return service.version_json(service.update_version(model, str(ref),
                                                           description=description))

    def delete_version(self, model: str, ref: str | int, *,
                       drop_aliases: list[str] | tuple[str, ...] = ()) -> list[str]:
        """Delete a version (its number is never reused), with the aliases named in
        ``drop_aliases`` that point at it (a protected one needs ``admin``); ``409
        version_has_aliases`` while another alias points at it.  The aliases dropped."""
        self.require(WRITE, model)
        for name in drop_aliases:
            require_alias_admin(self.request, model, name)
        return self._registry.delete_version(model, str(ref), drop_aliases=list(drop_aliases))

    def finalize_version(self, model: str, ref: str | int) -> dict[str, Any]:
        """Validate a draft: its document, ``status`` ``ready``, ``rejected`` (with its
        ``problems``; final) or ``validating`` (scanners run in the worker)."""
        self.require(WRITE, model)
        service = self._registry
        return service.version_json(service.finalize_version(model, str(ref)))

    def set_version_tag(self, model: str, ref: str | int, key: str, value: str) -> None:
        """Set a tag on a version."""
        self.require(WRITE, model)
        self._registry.set_version_tag(model, str(ref), key, value)

    def delete_version_tag(self, model: str, ref: str | int, key: str) -> None:
        """Delete a tag of a version."""
        self.require(WRITE, model)
        self._registry.delete_version_tag(model, str(ref), key)

    # ------------------------------------------------------------------------- files

    def list_files(self, model: str, ref: str | int) -> list[dict[str, Any]]:
        """The files of a version (``path``, ``size``, ``digest``, ``media_type``...)."""
        self.require(READ, model)
        _version, files = self._files.list_files(model, str(ref))
        return [file_json(f) for f in files]

    def get_file(self, model: str, ref: str | int, path: str) -> dict[str, Any]:
        """One file's document (404 ``file_not_found``)."""
        self.require(READ, model)
        _version, file = self._files.get_file(model, str(ref), path)
        return file_json(file)

    def download(self, model: str, ref: str | int, path: str) -> Response:
        """The response sending a file, as ``GET …/files/{path}`` does: ``Range``,
        ``ETag``, ``If-None-Match``, ``If-Range``, ``HEAD``, a redirect where the store
        offers one."""
        self.require(READ, model)
        _version, file = self._files.get_file(model, str(ref), path)
        return send_blob(self.request, file.sha256, file.size, path=file.path,
                         media_type=file.media_type)

    def read_file(self, model: str, ref: str | int, path: str, *, max_size: int) -> bytes:
        """The bytes of a small file (a model card), read from the blob store whatever it
        is (no redirect); 413 ``file_too_large`` when the file has more than ``max_size``
        bytes."""
        self.require(READ, model)
        _version, file = self._files.get_file(model, str(ref), path)
        if file.size > max_size:
            raise PayloadTooLarge(f"{path} has {file.size} bytes, more than the {max_size} "
                                  "read here", code="file_too_large",
                                  details={"path": path, "size": file.size})
        with self.request.blob_store.open(file.sha256) as stream:
            chunks = []
            while chunk := stream.read(1 << 16):
                chunks.append(chunk)
        return b"".join(chunks)

    def link_file(self, model: str, ref: str | int, path: str, sha256: str, *,
                  media: str | None = None, size: int | None = None
                  ) -> tuple[dict[str, Any], bool]:
        """Add a file to a draft by the digest of content the registry holds in a version
        the caller may read (404 ``blob_not_found`` otherwise): ``(file, created)``."""
        self.require(WRITE, model)
        file, outcome = self._files.link_file(
            model, str(ref), path, _digest(sha256), media=media_type(media),
            size=size, readable=readable_models(self.request))
        return file_json(file), outcome == "created"

    def link_held_blob(self, model: str, ref: str | int, path: str, owner: str, key: str,
                       *, media: str | None = None) -> tuple[dict[str, Any], bool]:
        """Add a file to a draft with the blob ``owner`` holds under ``key`` (content a
        plugin stored with :meth:`store_blob`, e.g. a run's artifact that becomes a model
        version's file): linked by digest, not copied, under the size policy an upload of
        it meets.  404 ``blob_not_found`` without such a hold.  ``(file, created)``.

        The plugin decides that the caller may use the held content (it holds it for the
        caller's run, say); the registry checks ``write`` on the model.
        """
        self.require(WRITE, model)
        _check_hold(owner, key)
        files = self._files
        version = files.draft(model, str(ref), lock=True)
        db = self.request.dbsession
        hold = db.get(BlobHold, (owner, key))
        blob = None if hold is None else db.execute(
            sa.select(Blob.sha256, Blob.size).where(Blob.sha256 == hold.sha256)
            .with_for_update()).first()
        if blob is None or not self.request.blob_store.exists(blob.sha256):
            raise NotFound(f"{owner} holds no blob under {key!r}", code="blob_not_found",
                           details={"owner": owner, "key": key})
        check_upload(db, self.request.registry.settings, version, path, blob.size)
        check_new_path(path)
        file, outcome = files.add_file(version, path, BlobInfo(blob.sha256, blob.size),
                                       media_type(media), verify_stored=False)
        return file_json(file), outcome == "created"

    def delete_file(self, model: str, ref: str | int, path: str) -> None:
        """Delete a file of a draft."""
        self.require(WRITE, model)
        self._files.delete_file(model, str(ref), path)

    # ------------------------------------------------------------------ upload sessions

    def open_upload(self, model: str, ref: str | int, path: str, *, size: int | None = None,
                    part_size: int | None = None, sha256: str | None = None,
                    media: str | None = None) -> dict[str, Any]:
        """Open an upload session for one file of a draft (``POST …/uploads``): its
        document (``id``, ``parts``...).  With ``size`` and ``part_size`` the file comes
        in numbered parts (:meth:`put_part`)."""
        self.require(WRITE, model)
        snapshot = self.request.upload_service.open(
            model, str(ref), path=path, owner=self.caller, size=size,
            sha256=None if sha256 is None else _digest(sha256),
            media=media_type(media), part_size=part_size)
        return self._session_json(snapshot)

    def _session(self, upload_id: str) -> Any:
        """The caller's open session (404 ``upload_not_found`` for anyone else's)."""
        found = self._files.find_upload(upload_id)
        if found is None or found[0].owner != self.caller:
            raise upload_not_found()
        upload, model, _number = found
        self.require(WRITE, model)
        return upload

    def _session_json(self, snapshot: Any) -> dict[str, Any]:
        body = upload_json(self.request, snapshot.upload, snapshot.model, snapshot.number)
        body["parts"] = snapshot.parts
        return body

    def get_upload(self, upload_id: str) -> dict[str, Any]:
        """The state of the caller's upload session."""
        upload = self._session(upload_id)
        return self._session_json(self.request.upload_service.status(upload.public_id))

    def put_part(self, upload_id: str, number: int, stream: BinaryIO, length: int, *,
                 sha256: str) -> tuple[dict[str, Any], bool]:
        """Store part ``number`` (``length`` bytes of ``stream``, whose digest is
        ``sha256``): ``(part, stored)`` (``stored`` is false when it held these bytes)."""
        upload = self._session(upload_id)
        return self.request.upload_service.put_part(
            upload.public_id, number, stream, length, sha256=_digest(sha256))

    def append(self, upload_id: str, stream: BinaryIO, length: int, *,
               start: int | None = None) -> dict[str, Any]:
        """Append a chunk to a sequential session (``PATCH``)."""
        upload = self._session(upload_id)
        snapshot = self.request.upload_service.append(upload.public_id, start, stream, length)
        return self._session_json(snapshot)

    def complete_upload(self, upload_id: str, sha256: str) -> tuple[dict[str, Any], bool]:
        """Complete a session with the whole file's digest: ``(file, created)``; ``400
        digest_mismatch`` keeps the session and lists its parts."""
        upload = self._session(upload_id)
        body, outcome = self.request.upload_service.complete(upload.public_id,
                                                             _digest(sha256))
        return body, outcome == "created"

    def abort_upload(self, upload_id: str) -> None:
        """Abort a session and free what it received."""
        upload = self._session(upload_id)
        self.request.upload_service.abort(upload.public_id)

    # ------------------------------------------------------------------ plugin blobs

    def store_blob(self, stream: BinaryIO, *, sha256: str | None = None,
                   max_size: int | None = None, hold: tuple[str, str] | None = None
                   ) -> BlobInfo:
        """Stream bytes into the blob store, referenced by no version (yet), in a
        transaction of its own: call it from a streaming view.

        :param hold: ``(owner, key)`` to hold the blob under at once (:meth:`hold_blob`);
            without it, hold it within the gc grace period (``modelreg gc --grace``) or
            garbage collection frees it.
        """
        if hold is not None:
            _check_hold(*hold)
        store = self.request.blob_store
        info = store.put(stream, expected_sha256=None if sha256 is None
                         else _digest(sha256), max_size=max_size)
        with transaction(self.request.registry) as db:
            touch_blob(db, info)
            if hold is not None:
                _hold(db, hold[0], hold[1], info.sha256)
        return info

    def hold_blob(self, owner: str, key: str, sha256: str) -> None:
        """Keep the blob ``sha256`` from garbage collection under ``(owner, key)`` (one
        blob per key: holding another replaces it).  ``owner`` is the plugin's name.

        404 ``blob_not_found`` when the registry holds no such blob.  In the request's
        transaction: the hold exists once the view's transaction commits.
        """
        _check_hold(owner, key)
        sha256 = _digest(sha256)
        db = self.request.dbsession
        # Locked as a link by digest locks it (modelreg.files.gc): collection either skips
        # the row or has deleted it, and then the hold answers 404.
        blob = db.get(Blob, sha256, with_for_update=True)
        if blob is None or not self.request.blob_store.exists(sha256):
            raise NotFound(f"no blob sha256:{sha256} is stored", code="blob_not_found",
                           details={"digest": f"sha256:{sha256}"})
        touch_blob(db, BlobInfo(sha256=sha256, size=blob.size))
        _hold(db, owner, key, sha256)

    def release_blob(self, owner: str, key: str) -> bool:
        """Drop the hold ``(owner, key)``; whether there was one.  The blob is collected
        once nothing references it and the grace period has passed."""
        _check_hold(owner, key)
        db = self.request.dbsession
        hold = db.get(BlobHold, (owner, key))
        if hold is None:
            return False
        db.delete(hold)
        db.flush()
        return True

    def open_held_blob(self, owner: str, key: str) -> BinaryIO:
        """A readable stream (a context manager) of the blob ``owner`` holds under ``key``,
        e.g. to join parts a plugin stored one by one; 404 ``blob_not_found`` without such
        a hold."""
        _check_hold(owner, key)
        hold = self.request.dbsession.get(BlobHold, (owner, key))
        if hold is None or not self.request.blob_store.exists(hold.sha256):
            raise NotFound(f"{owner} holds no blob under {key!r}", code="blob_not_found",
                           details={"owner": owner, "key": key})
        return self.request.blob_store.open(hold.sha256)

    def release_blob_now(self, owner: str, key: str) -> bool:
        """:meth:`release_blob` in a transaction of its own, for streaming views (whose
        request session only reads); whether there was a hold."""
        _check_hold(owner, key)
        with transaction(self.request.registry) as db:
            hold = db.get(BlobHold, (owner, key))
            if hold is None:
                return False
            db.delete(hold)
        return True

    def held_blobs(self, owner: str) -> dict[str, str]:
        """``{key: sha256}`` of the blobs ``owner`` holds."""
        rows = self.request.dbsession.execute(
            sa.select(BlobHold.key, BlobHold.sha256).where(BlobHold.owner == owner))
        return dict(rows.all())

    # ----------------------------------------------------------------------- aliases

    def list_aliases(self, model: str) -> list[dict[str, Any]]:
        """The aliases of a model."""
        self.require(READ, model)
        return self._registry.list_aliases(model)

    def get_alias(self, model: str, name: str) -> dict[str, Any]:
        """An alias's document."""
        self.require(READ, model)
        return self._registry.alias_document(model, name)

    def set_alias(self, model: str, name: str, version: int) -> tuple[dict[str, Any], bool]:
        """Point an alias at a ready version (a protected alias needs ``admin``):
        ``(alias, created)``."""
        self.require(WRITE, model)
        require_alias_admin(self.request, model, name)
        service = self._registry
        alias, row, created = service.set_alias(model, name, version)
        return service.alias_json(alias, row), bool(created)

    def move_alias(self, model: str, name: str, version: int, *,
                   expected: int | None) -> tuple[dict[str, Any], bool]:
        """:meth:`set_alias`, only if the alias still points at ``expected`` (``None``: only
        if it does not exist yet); ``409 alias_moved`` otherwise.  Checked under the model's
        row lock that moves take, so of two moves from the same version one wins and the
        other is refused, never silently overwritten (a compare-and-set, for protocols
        whose writes name the head they build on: the Hugging Face Hub's commits)."""
        self.require(WRITE, model)
        db = self.request.dbsession
        model_id = db.scalar(sa.select(Model.id)
                             .where(Model.normalized_name == normalize_name(model))
                             .with_for_update())
        if model_id is None:
            self.get_model(model)  # the "no such model" answer
        current = db.scalar(sa.select(Version.number)
                            .join(Alias, Alias.version_id == Version.id)
                            .where(Alias.model_id == model_id, Alias.name == name))
        if current != expected:
            raise Conflict(f"alias {name!r} points at version {current}, no longer at "
                           f"{expected}", code="alias_moved",
                           details={"alias": name, "version": current, "expected": expected})
        return self.set_alias(model, name, version)

    def delete_alias(self, model: str, name: str) -> None:
        """Delete an alias (a protected one needs ``admin``)."""
        self.require(WRITE, model)
        require_alias_admin(self.request, model, name)
        self._registry.delete_alias(model, name)

    def alias_history(self, model: str, name: str, *, page_size: int | str | None = None,
                      page_token: str | None = None) -> dict[str, Any]:
        """The moves of an alias, newest first: ``{"moves", "next_page_token"}``."""
        self.require(READ, model)
        _model, moves, token = self._registry.alias_history(
            model, name, page_size=None if page_size is None else str(page_size),
            page_token=page_token)
        return {"moves": moves, "next_page_token": token}

    # ------------------------------------------------------------------------- audit

    def audit(self, *, page_size: int | str | None = None, page_token: str | None = None,
              **filters: str | None) -> dict[str, Any]:
        """The audit log, newest first (global admins only, as ``GET /api/v1/audit``):
        ``{"events", "next_page_token"}``; ``filters`` are that route's query parameters
        (``actor``, ``action``, ``target``, ``target_type``, ``model``, ``since``,
        ``until``)."""
        self.require(ADMIN, None)
        service = self.request.security_service
        rows, token = service.list_audit(page_size=page_size, page_token=page_token,
                                         **filters)
        return {"events": [service.audit_json(e) for e in rows], "next_page_token": token}

    # ---------------------------------------------------------------------- identity

    def whoami(self) -> dict[str, Any] | None:
        """The caller: ``{"name", "admin", "grants": [{"pattern", "level"}]}``, ``None``
        when anonymous (401 for credentials that are refused)."""
        identity = self.request.identity
        if identity is None:
            return None
        return _identity_json(identity)

    def identify_token(self, token: str) -> dict[str, Any]:
        """Who an API token stands for, as :meth:`whoami` shows it, without making it the
        caller of this request (a sign-in form checks a pasted token with it).

        :raises Unauthorized: 401 for a malformed, unknown, revoked or expired token (counted
            by the failed-authentication throttle like a refused bearer token; a blocked
            client gets 429).
        """
        policy = security_policy(self.request)
        policy.throttle.check(self.request)
        try:
            identity, _row = authenticate_token(self.request.dbsession, token, utcnow())
        except Unauthorized:
            policy.throttle.failed(self.request)
            raise
        return _identity_json(identity)

    def list_principals(self, *, page_size: int | str | None = None,
                        page_token: str | None = None) -> dict[str, Any]:
        """A page of principals by name (global admins only): ``{"principals",
        "next_page_token"}``, as ``GET /api/v1/admin/principals``."""
        self.require(ADMIN, None)
        service = self.request.security_service
        rows, token = service.list_principals(page_size=page_size, page_token=page_token)
        return {"principals": [service.principal_json(p) for p in rows],
                "next_page_token": token}

    def list_groups(self, *, page_size: int | str | None = None,
                    page_token: str | None = None) -> dict[str, Any]:
        """A page of groups with their members (global admins only): ``{"groups",
        "next_page_token"}``."""
        self.require(ADMIN, None)
        service = self.request.security_service
        rows, token = service.list_groups(page_size=page_size, page_token=page_token)
        return {"groups": [service.group_json(g) for g in rows], "next_page_token": token}

    def list_grants(self, *, principal: str | None = None, group: str | None = None,
                    page_size: int | str | None = None, page_token: str | None = None
                    ) -> dict[str, Any]:
        """A page of grants, of one principal or group if named (global admins only):
        ``{"grants", "next_page_token"}``."""
        self.require(ADMIN, None)
        service = self.request.security_service
        rows, token = service.list_grants(principal=principal, group=group,
                                          page_size=page_size, page_token=page_token)
        return {"grants": [service.grant_json(g) for g in rows], "next_page_token": token}

    def create_principal(self, name: str, *, admin: bool = False, service: bool = False
                         ) -> dict[str, Any]:
        """Create a principal (global admins only), as ``POST /api/v1/admin/principals``;
        its document (409 ``principal_exists``)."""
        self.require(ADMIN, None)
        security = self.request.security_service
        row = security.create_principal(name, is_admin=admin,
                                        kind="service" if service else "user")
        return security.principal_json(row)

    def create_grant(self, *, pattern: str, level: str, principal: str | None = None,
                     group: str | None = None) -> dict[str, Any]:
        """Grant ``level`` (``read``, ``write``, ``admin``) on the models ``pattern``
        matches to a principal or a group (global admins only); its document."""
        self.require(ADMIN, None)
        security = self.request.security_service
        return security.grant_json(security.create_grant(
            pattern=pattern, level=level, principal=principal, group=group))

    def delete_grant(self, grant_id: int | str) -> None:
        """Delete a grant by its id (global admins only; 404 ``grant_not_found``)."""
        self.require(ADMIN, None)
        self.request.security_service.delete_grant(grant_id)

    def list_tokens(self, principal: str, *, page_size: int | str | None = None,
                    page_token: str | None = None) -> dict[str, Any]:
        """A page of a principal's tokens, never their secrets (global admins, or the
        caller for itself): ``{"tokens", "next_page_token"}``."""
        if self.caller is None or principal != self.caller:
            self.require(ADMIN, None)
        service = self.request.security_service
        rows, token = service.list_tokens(principal=principal, page_size=page_size,
                                          page_token=page_token)
        return {"tokens": [service.token_json(t) for t in rows], "next_page_token": token}

    def version_findings(self, model: str, ref: str | int) -> list[dict[str, Any]]:
        """What the scanners found in a version's files (``GET …/findings``): ``path``,
        ``scanner``, ``severity``, ``code``, ``message``, ``details``."""
        self.require(READ, model)
        version = self._registry.get_version(model, str(ref))
        rows = self.request.dbsession.scalars(
            sa.select(ScanFinding).where(ScanFinding.version_id == version.id)
            .order_by(ScanFinding.path, ScanFinding.id))
        return [finding_json(row) for row in rows]

    def grants_of(self, principal: str) -> list[dict[str, Any]]:
        """The grants of a principal (global admins only)."""
        self.require(ADMIN, None)
        service = self.request.security_service
        grants, _token = service.list_grants(principal=principal, page_size=1000)
        return [service.grant_json(g) for g in grants]

    def create_token(self, principal: str, *, scopes: list[str] | tuple[str, ...] = (READ,),
                     expires_in_days: int | None = None, description: str = ""
                     ) -> dict[str, Any]:
        """Create a token (global admins, or the caller for itself): its document with
        the secret in ``token`` (shown this once)."""
        if principal != self.caller:
            self.require(ADMIN, None)
        _within_caller_scopes(self.request.identity, scopes)
        service = self.request.security_service
        row, token = service.create_token(principal, scopes=list(scopes),
                                          expires_in_days=expires_in_days,
                                          description=description)
        return {**service.token_json(row), "token": token}

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a token by its public id (global admins, or the token's principal)."""
        service = self.request.security_service
        row = service.get_token(token_id)
        if self.caller is None:
            raise denial(self.request, WRITE, None)
        if service.token_json(row).get("principal") != self.caller:
            self.require(ADMIN, None)
        return service.token_json(service.revoke_token(token_id))


def _within_caller_scopes(identity: Any, scopes: list[str] | tuple[str, ...]) -> None:
    """403 ``token_scope`` unless every scope asked for is covered by one of the calling
    token's own scopes: at the same or a lower level, on every model or on the same
    pattern.  A caller not limited by scopes (no token, or an identity a plugin gave) is
    limited by its grants alone, as any token it makes is."""
    own = None if identity is None else identity.scopes
    if own is None:
        return
    for scope in parse_scopes(scopes):
        if not any(mine.level >= scope.level
                   and (mine.pattern is None or mine.pattern == scope.pattern)
                   for mine in own):
            raise Forbidden(f"a token cannot be given scope {str(scope)!r}: the token "
                            f"making it has only {format_scopes(own)!r}",
                            code="token_scope")


def _identity_json(identity: Any) -> dict[str, Any]:
    return {"name": identity.name, "admin": identity.is_admin,
            "grants": [{"pattern": pattern, "level": level.name.lower()}
                       for pattern, level in identity.grants],
            "scopes": None if identity.scopes is None
            else [str(scope) for scope in identity.scopes],
            "token_id": identity.token_id}


def _digest(value: str) -> str:
    """The lowercase hex of ``sha256:<hex>`` or of bare hex (422 ``invalid_digest``)."""
    text = value if value.startswith("sha256:") else "sha256:" + value
    return parse_hex_digest(text)


def _hold(db: Any, owner: str, key: str, sha256: str) -> None:
    hold = db.get(BlobHold, (owner, key))
    if hold is None:
        db.add(BlobHold(owner=owner, key=key, sha256=sha256))
    else:
        hold.sha256 = sha256
    db.flush()


def _check_hold(owner: str, key: str) -> None:
    if not 0 < len(owner) <= HOLD_OWNER_LENGTH or not 0 < len(key) <= HOLD_KEY_LENGTH:
        raise ApiError(f"a hold's owner has 1 to {HOLD_OWNER_LENGTH} characters and its key "
                       f"1 to {HOLD_KEY_LENGTH}", code="invalid_hold", status=422)


def plugin_hooks(registry: Any) -> Any:
    """The hook relay of the app's plugin manager (``plugin_hooks(request.registry)``), so
    that a plugin can call hooks it hosts, as the web UI calls ``modelreg_web_pages`` and
    ``modelreg_web_sections``: ``plugin_hooks(r).modelreg_web_pages(settings=...)``."""
    return registry[keys.PLUGIN_MANAGER].hook


def registry_of(request: Request) -> Registry:
    """The registry as the caller of ``request`` may use it (``request.modelreg``)."""
    return request.modelreg


def includeme(config: Configurator) -> None:
    """``request.modelreg``: the :class:`Registry` of the request."""
    config.add_request_method(Registry, "modelreg", reify=True)
