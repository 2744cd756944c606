"""The REST client: :class:`Client`, one method per operation of ``/api/v1``.

HTTP goes through one :class:`requests.Session` per client (a pool of keep-alive connections,
sized for parallel transfers).  Idempotent requests (``GET``, ``HEAD``, ``PUT``, ``DELETE``,
``OPTIONS``) are retried with exponential backoff on connection failures and on 429, 502,
503 and 504 (honouring ``Retry-After``); ``POST`` and ``PATCH`` never are, since sending them
twice could do their work twice.  Upload chunks (``PATCH``) recover instead by asking the
session's offset and resuming from there.

Every error answer becomes an exception of :mod:`modelreg_client.errors` that carries the
server's ``code``, ``message``, ``details`` and HTTP ``status``.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

from . import __version__
from .cache import Cache, PathFilter
from .config import DEFAULT_RETRIES, offline_setting
from .config import cache_dir as default_cache_dir
from .errors import (
    IntegrityError,
    ModelregError,
    NetworkError,
    NotFound,
    ServerError,
    error_for_status,
)
from .manifest import DIGEST_PREFIX, FileRegion, IgnoreRules
from .transfer import DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE, Puller, Pusher
from .types import (
    Alias,
    AliasMove,
    FileEntry,
    FileList,
    Finding,
    Model,
    Part,
    PullResult,
    PushResult,
    Upload,
    Version,
)

__all__ = ["Client"]

#: Methods that are safe to send again: retried on connection failures and busy answers.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
#: Statuses that mean "try again later".
RETRY_STATUSES = (429, 502, 503, 504)


class _Retry(Retry):
    """urllib3's retries, less those of a refused connection.

    A refused connection means nothing listens at the address (a wrong port, a server that is
    down): retrying with backoff only made the command fail seven seconds later.  Timeouts,
    resets and the statuses of :data:`RETRY_STATUSES` are still retried.
    """

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None,
                  _stacktrace: Any = None) -> Retry:
        if isinstance(error, NewConnectionError) and _refused(error):
            raise MaxRetryError(_pool, url or "", error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _refused(error: BaseException) -> bool:
    """Whether a connection error comes from a refused connection (nothing listening)."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "refused" in str(error).lower()


def _segment(value: str | int) -> str:
    return quote(str(value), safe=":")


class Client:
    """A client of one modelreg server.

    :param url: the server's base URL, e.g. ``https://models.example.com``.
    :param token: an API token (``mr_…``), or ``None`` for anonymous access.
    :param timeout: seconds to wait to connect and for each read from the server.
    :param retries: attempts after the first for idempotent requests.
    :param backoff: base of the exponential backoff between retries, in seconds.
    :param parallel: files transferred at once by :meth:`push` and :meth:`pull`.
    :param chunk_size: preferred chunk size of upload sessions (bounded by the server's).
    :param state_dir: where :meth:`push` keeps what it needs to resume after an interruption
        (default: :func:`modelreg_client.config.state_dir`).
    :param cache_dir: the root of the local cache of pulled files, shared by every client on
        the machine (default: :func:`modelreg_client.config.cache_dir`, i.e.
        ``$MODELREG_CACHE`` or ``~/.cache/modelreg``).
    :param direct_writes: write downloaded files with ``O_DIRECT`` where the filesystem
        allows it: no copy through the page cache, so less CPU per byte, but the pulled
        files are not in memory afterwards (``False`` writes them through the cache).

    Use it as a context manager, or call :meth:`close`, to release its connections.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 300.0,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 0.5,
        parallel: int = 4,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        state_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        direct_writes: bool = True,
    ) -> None:
        if not url or "://" not in url:
            raise ValueError(f"the server URL must start with http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self.api = self.url + "/api/v1"
        self.token = token
        self.timeout = timeout
        self.parallel = max(1, parallel)
        #: Write downloads with ``O_DIRECT`` where the filesystem allows (no copy into the
        #: page cache: less CPU, but a pulled file is not in memory afterwards).
        self.direct_writes = direct_writes
        self.chunk_size = max(MIN_CHUNK_SIZE, chunk_size)
        self.state_dir = None if state_dir is None else Path(state_dir)
        #: The local cache of this server's files (:mod:`modelreg_client.cache`).
        self.cache = Cache(default_cache_dir() if cache_dir is None else Path(cache_dir),
                           self.url)
        #: The server's single-PUT limit once learned from an upload session.
        self.max_put_size: int | None = None
        self.min_chunk_size: int | None = None
        self._session = requests.Session()
        self._store_session: requests.Session | None = None  # no credentials: presigned URLs
        retry = _Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            allowed_methods=IDEMPOTENT_METHODS,
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff,
            backoff_max=30,
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=2 * self.parallel + 4,
                              max_retries=retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = f"modelreg-client/{__version__}"
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()
        if self._store_session is not None:
            self._store_session.close()

    # ------------------------------------------------------------------------- HTTP

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send a request to ``path`` (relative to ``/api/v1``, or absolute starting with
        ``/``); return the response, or raise the matching :class:`ModelregError`.

        :raises NetworkError: the server could not be reached, or the connection broke.
        """
        url = path if path.startswith("http") else (
            self.url + path if path.startswith("/") else f"{self.api}/{path}")
        try:
            response = self._session.request(
                method, url, json=json, params=params, data=data, headers=headers,
                stream=stream, timeout=(min(self.timeout, 30.0), self.timeout),
                allow_redirects=method in ("GET", "HEAD"),
            )
        except requests.exceptions.RetryError as exc:
            raise ServerError(f"{method} {url}: the server stayed busy through every retry "
                              f"({exc})", code="retries_exhausted") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise NetworkError(f"cannot reach {self.url}: {_reason(exc)}") from exc
        except requests.exceptions.RequestException as exc:
            raise NetworkError(f"{method} {url} failed: {exc}") from exc
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _error(self, response: requests.Response) -> ModelregError:
        try:
            body = response.json()
            error = body["error"]
            code, message = error.get("code"), error.get("message")
            details = error.get("details") or {}
        except (ValueError, KeyError, TypeError, AttributeError):
            text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
            status = response.status_code
            if status < 500:
                # Every answer of a modelreg registry below 500 carries its error envelope: a
                # bare 404 comes from another server (a wrong URL or port, a proxy's page).
                return ServerError(
                    f"{self.url} does not answer as a modelreg registry: "
                    f"{response.request.method} {response.url} got HTTP {status} without "
                    f"modelreg's error body ({text or 'empty'}); check the URL",
                    code="not_a_registry", status=status)
            code, message, details = None, f"HTTP {status} {text}".strip(), {}
        finally:
            response.close()
        return error_for_status(response.status_code, code,
                                message or f"HTTP {response.status_code}", details)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(f"{method} {path}: the server answered something that is not "
                              "JSON", code="invalid_response",
                              status=response.status_code) from exc

    def _pages(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        params = {k: v for k, v in params.items() if v is not None}
        while True:
            body = self._json("GET", path, params=params)
            yield from body.get(key) or []
            token = body.get("next_page_token")
            if not token:
                return
            params["page_token"] = token

    # ----------------------------------------------------------------------- server

    def whoami(self) -> dict[str, Any]:
        """``GET /api/v1/whoami``: who the registry takes the caller for (``principal`` is
        ``None`` when anonymous), with the token's scopes and the grants held."""
        return self._json("GET", "whoami")

    def health(self) -> dict[str, Any]:
        """``GET /readyz``: the server's readiness (raises :class:`ServerError` if not ready)."""
        return self._json("GET", "/readyz")

    def openapi(self) -> dict[str, Any]:
        """The server's OpenAPI document."""
        return self._json("GET", "openapi.json")

    # ----------------------------------------------------------------------- models

    def list_models(
        self, filter: str | None = None, *, order_by: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Model]:
        """Every model the caller may read (matching ``filter``), fetched page by page."""
        for data in self._pages("models", "models", {
                "filter": filter, "order_by": order_by, "page_size": page_size}):
            yield Model.from_json(data)

    def search(self, filter: str, *, order_by: str | None = None) -> Iterator[Model]:
        """Models matching ``filter`` (see the filter language in docs/api.md)."""
        return self.list_models(filter, order_by=order_by)

    def get_model(self, name: str) -> Model:
        """A model by name."""
        return Model.from_json(self._json("GET", f"models/{_segment(name)}"))

    def create_model(
        self, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> Model:
        """Create a model."""
        return Model.from_json(self._json("POST", "models", json={
            "name": name, "description": description, "tags": tags or {}}))

    def update_model(
        self, name: str, *, new_name: str | None = None, description: str | None = None
    ) -> Model:
        """Rename a model or change its description."""
        body = {k: v for k, v in (("name", new_name), ("description", description))
                if v is not None}
        return Model.from_json(self._json("PATCH", f"models/{_segment(name)}", json=body))

    def delete_model(self, name: str) -> None:
        """Delete a model with all its versions and aliases."""
        self.request("DELETE", f"models/{_segment(name)}")

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        """Set a tag on a model."""
        self.request("PUT", f"models/{_segment(name)}/tags/{_segment(key)}",
                     json={"value": value})

    def delete_model_tag(self, name: str, key: str) -> None:
        """Delete a tag of a model."""
        self.request("DELETE", f"models/{_segment(name)}/tags/{_segment(key)}")

    # --------------------------------------------------------------------- versions

    def _version_path(self, model: str, ref: str | int) -> str:
        return f"models/{_segment(model)}/versions/{_segment(ref)}"

    def list_versions(
        self, model: str, filter: str | None = None, *, order_by: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Version]:
        """The versions of a model (newest first unless ``order_by`` says otherwise)."""
        for data in self._pages(f"models/{_segment(model)}/versions", "versions", {
                "filter": filter, "order_by": order_by, "page_size": page_size}):
            yield Version.from_json(data)

    def get_version(self, model: str, ref: str | int) -> Version:
        """A version by number, alias, ``latest`` or ``sha256:<digest>``."""
        return Version.from_json(self._json("GET", self._version_path(model, ref)))

    def create_version(
        self, model: str, *, description: str = "", metadata: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
    ) -> Version:
        """Create a draft version (numbered by the server)."""
        return Version.from_json(self._json(
            "POST", f"models/{_segment(model)}/versions",
            json={"description": description, "metadata": metadata or {},
                  "lineage": lineage or {}, "tags": tags or {}}))

    def update_version(
        self, model: str, number: int, *, description: str | None = None,
        metadata: dict[str, Any] | None = None, lineage: dict[str, Any] | None = None,
    ) -> Version:
        """Change a version's description, or a draft's metadata and lineage."""
        body = {k: v for k, v in (("description", description), ("metadata", metadata),
                                  ("lineage", lineage)) if v is not None}
        return Version.from_json(self._json("PATCH", self._version_path(model, number),
                                            json=body))

    def delete_version(
        self, model: str, number: int, *, drop_aliases: Iterable[str] = ()
    ) -> None:
        """Delete a version (its number is never reused).

        While an alias points at it the server refuses (:class:`Conflict`, code
        ``version_has_aliases``, the aliases in ``details["aliases"]``) unless
        ``drop_aliases`` names every one: those are deleted with it, each recorded as an
        alias deletion.
        """
        names = ",".join(drop_aliases)
        self.request("DELETE", self._version_path(model, number),
                     params={"drop_aliases": names} if names else None)

    def finalize_version(
        self, model: str, number: int, *, wait: float = 600.0,
        on_notice: Callable[[str], None] | None = None,
    ) -> Version:
        """Finalize a draft; while scanners run (``validating``), poll up to ``wait``
        seconds for the outcome.  Returns the version: ``ready``, ``rejected``, or still
        ``validating`` if the wait ran out.

        :param on_notice: called with what the person waiting should know: the server's
            notice that no worker runs its scans (the version would stay validating), and
            once a minute while the wait goes on.
        """
        body = self._json("POST", self._version_path(model, number) + "/finalize")
        version = Version.from_json(body)
        notify = on_notice or (lambda message: None)
        if version.status == "validating" and body.get("notice"):
            notify(f"{model}/{number}: {body['notice']}")
        started = time.monotonic()
        deadline, told = started + wait, started
        delay = 0.2
        while version.status == "validating" and time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)
            version = self.get_version(model, number)
            if version.status == "validating" and time.monotonic() - told >= 60:
                told = time.monotonic()
                notify(f"{model}/{number} is still validating after "
                       f"{int(told - started)} s (waiting up to {int(wait)} s)")
        return version

    def list_findings(self, model: str, ref: str | int) -> list[Finding]:
        """What the server's scanners found in a version's files.

        An empty list when the server has no findings API (an older server, or one without
        background scanning).
        """
        try:
            body = self._json("GET", self._version_path(model, ref) + "/findings")
        except NotFound as exc:
            if exc.code == "not_found":  # no such route (a known version or model was named)
                return []
            raise
        return [Finding.from_json(f) for f in body.get("findings") or []]

    def set_version_tag(self, model: str, number: int, key: str, value: str) -> None:
        """Set a tag on a version."""
        self.request("PUT", f"{self._version_path(model, number)}/tags/{_segment(key)}",
                     json={"value": value})

    def delete_version_tag(self, model: str, number: int, key: str) -> None:
        """Delete a tag of a version."""
        self.request("DELETE", f"{self._version_path(model, number)}/tags/{_segment(key)}")

    # ---------------------------------------------------------------------- aliases

    def list_aliases(self, model: str) -> list[Alias]:
        """Every alias of a model."""
        body = self._json("GET", f"models/{_segment(model)}/aliases")
        return [Alias.from_json(a) for a in body.get("aliases") or []]

    def get_alias(self, model: str, alias: str) -> Alias:
        """Resolve an alias to its version number."""
        return Alias.from_json(
            self._json("GET", f"models/{_segment(model)}/aliases/{_segment(alias)}"))

    def set_alias(self, model: str, alias: str, version: int) -> Alias:
        """Point an alias at a ready version (creating or moving it)."""
        return Alias.from_json(self._json(
            "PUT", f"models/{_segment(model)}/aliases/{_segment(alias)}",
            json={"version": int(version)}))

    def delete_alias(self, model: str, alias: str) -> None:
        """Delete an alias."""
        self.request("DELETE", f"models/{_segment(model)}/aliases/{_segment(alias)}")

    def alias_history(self, model: str, alias: str) -> Iterator[AliasMove]:
        """Every move of an alias, newest first."""
        path = f"models/{_segment(model)}/aliases/{_segment(alias)}/history"
        for data in self._pages(path, "history", {}):
            yield AliasMove.from_json(data)

    # ------------------------------------------------------------------------ files

    def _file_path(self, model: str, ref: str | int, path: str) -> str:
        return f"{self._version_path(model, ref)}/files/{quote(path, safe='/')}"

    def list_files(self, model: str, ref: str | int) -> FileList:
        """The files of a version (any ref), with the version's number and digest."""
        return FileList.from_json(
            self._json("GET", self._version_path(model, ref) + "/files"))

    def list_files_if_changed(
        self, model: str, ref: str | int, etag: str | None
    ) -> tuple[FileList | None, str | None]:
        """:meth:`list_files` as a conditional request: ``(None, etag)`` when the server
        answers ``304 Not Modified`` to ``If-None-Match: etag`` (the listing ``etag`` was
        taken from still holds: the ref names the same version with the same files), else
        ``(listing, its ETag)``.  For polling an alias without downloading its listing."""
        response = self.request("GET", self._version_path(model, ref) + "/files",
                                headers={"If-None-Match": etag} if etag else None)
        if response.status_code == 304:
            return None, response.headers.get("ETag") or etag
        try:
            body = response.json()
        except ValueError as exc:
            raise ServerError(f"GET {self._version_path(model, ref)}/files: the server "
                              "answered something that is not JSON", code="invalid_response",
                              status=response.status_code) from exc
        return FileList.from_json(body), response.headers.get("ETag")

    def file_info(self, model: str, ref: str | int, path: str) -> FileEntry:
        """A file's size and sha256 from a ``HEAD`` request (no body is sent)."""
        response = self.request("HEAD", self._file_path(model, ref, path))
        etag = response.headers.get("ETag", "").strip('"')
        return FileEntry(path, int(response.headers.get("Content-Length", 0)), etag,
                         response.headers.get("Content-Type", "application/octet-stream"))

    def read_file(self, model: str, ref: str | int, path: str) -> bytes:
        """A (small) file's bytes, in memory; :meth:`pull` or :meth:`download_file` for
        large ones."""
        return self.request("GET", self._file_path(model, ref, path)).content

    def open_file(
        self, model: str, ref: str | int, path: str, *, start: int = 0, etag: str | None = None
    ) -> requests.Response:
        """A streaming response of a file from byte ``start`` (``206`` if the server honours
        the range, ``200`` with the whole file if the content is no longer ``etag``).
        Close it when done."""
        # The bytes as stored: ranges of a compressed representation could not be resumed.
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
            if etag:
                headers["If-Range"] = f'"{etag}"'
        return self.request("GET", self._file_path(model, ref, path), headers=headers,
                            stream=True)

    def upload_file(
        self, model: str, number: int, path: str, source: str | Path | bytes, *,
        sha256: str | None = None, media_type: str | None = None, on_block: Any = None,
    ) -> FileEntry:
        """Upload one file to a draft in a single ``PUT`` (up to the server's limit).

        :param source: a local file, or the bytes themselves.
        :param sha256: the content's hex digest; the server refuses bytes that differ.
        """
        headers = {"Content-Type": media_type or "application/octet-stream"}
        params = {"digest": DIGEST_PREFIX + sha256} if sha256 else None
        if isinstance(source, bytes):
            data: Any = source
        else:
            location = Path(source)
            size = location.stat().st_size
            # An empty region would be sent chunked: send an empty body instead.
            data = FileRegion(location, 0, size, on_block) if size else b""
        return FileEntry.from_json(self._json("PUT", self._file_path(model, number, path),
                                              data=data, params=params, headers=headers))

    def link_file(
        self, model: str, number: int, path: str, sha256: str, *, size: int | None = None,
        media_type: str | None = None,
    ) -> FileEntry:
        """Give a draft the file ``path`` with content the server already holds, by its
        digest: no bytes are sent.

        :param sha256: the content's hex digest.
        :param size: the content's size, checked by the server if given.
        :raises NotFound: with code ``blob_not_found`` when the server does not hold the
            content or holds it only in models the caller may not read: upload it instead.
        """
        body: dict[str, Any] = {"path": path, "digest": DIGEST_PREFIX + sha256}
        if size is not None:
            body["size"] = size
        if media_type:
            body["media_type"] = media_type
        return FileEntry.from_json(
            self._json("POST", self._version_path(model, number) + "/files", json=body))

    def delete_file(self, model: str, number: int, path: str) -> None:
        """Delete a file of a draft."""
        self.request("DELETE", self._file_path(model, number, path))

    # -------------------------------------------------------------- upload sessions

    def open_upload(
        self, model: str, number: int, path: str, *, size: int | None = None,
        sha256: str | None = None, media_type: str | None = None,
        part_size: int | None = None, direct: bool = False,
    ) -> Upload:
        """Open a resumable upload session for one file of a draft.

        :param direct: this caller can send parts straight to the blob store
            (:meth:`part_url`); the session's ``direct`` says whether the server does so.

        :param part_size: send numbered parts of this size (:meth:`upload_part`, in any
            order, in parallel); needs ``size``.  Without it, sequential chunks
            (:meth:`upload_chunk`).
        """
        body: dict[str, Any] = {"path": path}
        if size is not None:
            body["size"] = size
        if part_size is not None:
            body["part_size"] = part_size
        if direct:
            body["direct"] = True
        if sha256:
            body["digest"] = DIGEST_PREFIX + sha256
        if media_type:
            body["media_type"] = media_type
        upload = Upload.from_json(
            self._json("POST", self._version_path(model, number) + "/uploads", json=body))
        self._learn_limits(upload)
        return upload

    def _learn_limits(self, upload: Upload) -> None:
        self.max_put_size = upload.max_chunk_size
        self.min_chunk_size = upload.min_chunk_size

    def get_upload(self, upload_id: str) -> Upload:
        """An upload session's state: ``offset`` is where to resume."""
        upload = Upload.from_json(self._json("GET", f"uploads/{_segment(upload_id)}"))
        self._learn_limits(upload)
        return upload

    def upload_chunk(self, upload_id: str, offset: int, data: bytes | FileRegion) -> Upload:
        """Send the chunk that starts at ``offset`` (the session's current offset)."""
        length = len(data)
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Range": f"bytes {offset}-{offset + length - 1}"}
        return Upload.from_json(self._json("PATCH", f"uploads/{_segment(upload_id)}",
                                           data=data, headers=headers))

    def upload_part(self, upload_id: str, number: int, data: bytes | FileRegion,
                    sha256: str) -> Part:
        """Send part ``number`` (1-based) of a session in numbered parts, with its digest.

        The same bytes again answer the part as held; other bytes for a number the session
        holds raise :class:`Conflict` (``part_exists``: :meth:`delete_part` first), as does a
        number another request is sending (``part_in_progress``).
        """
        digest = base64.b64encode(bytes.fromhex(sha256)).decode()
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Digest": f"sha-256=:{digest}:"}
        return Part.from_json(self._json(
            "PUT", f"uploads/{_segment(upload_id)}/parts/{int(number)}", data=data,
            headers=headers))

    def delete_part(self, upload_id: str, number: int) -> None:
        """Free a part a session holds, so that it can be sent again."""
        self.request("DELETE", f"uploads/{_segment(upload_id)}/parts/{int(number)}")

    def complete_upload(
        self, upload_id: str, sha256: str, data: bytes | FileRegion | None = None,
        offset: int | None = None,
    ) -> FileEntry:
        """Complete an upload with the whole file's digest; ``data`` is an optional last
        chunk starting at ``offset``."""
        headers = {"Content-Type": "application/octet-stream"}
        if data is not None and len(data):
            if offset is None:
                raise ValueError("a last chunk needs its offset")
            headers["Content-Range"] = f"bytes {offset}-{offset + len(data) - 1}"
        else:
            data = b""
        return FileEntry.from_json(self._json(
            "PUT", f"uploads/{_segment(upload_id)}", data=data, headers=headers,
            params={"digest": DIGEST_PREFIX + sha256}))

    # A direct upload's parts go to the blob store (S3) at presigned URLs: see
    # docs/api.md, "Direct uploads".

    def part_url(self, upload_id: str, number: int, sha256: str) -> dict[str, Any]:
        """Where to send part ``number`` of a direct upload: ``{"url", "method",
        "headers", "size", ...}``, signed for the part's exact length and digest."""
        return self._json("POST", f"uploads/{_segment(upload_id)}/parts/{int(number)}/url",
                          json={"digest": DIGEST_PREFIX + sha256})

    def send_to_store(self, signed: dict[str, Any], data: bytes | FileRegion) -> str:
        """Send a part to the presigned request ``signed`` (:meth:`part_url`), without
        this client's credentials; return the store's ``ETag``."""
        if len(data) != int(signed["headers"].get("Content-Length", len(data))):
            raise ValueError("the part's length is not the one the URL is signed for")
        headers = {name: value for name, value in signed["headers"].items()
                   if name.lower() != "content-length"}  # requests sends len(data)
        headers.setdefault("Content-Type", "application/octet-stream")
        if self._store_session is None:
            self._store_session = requests.Session()
            self._store_session.headers["User-Agent"] = f"modelreg-client/{__version__}"
        try:
            response = self._store_session.request(
                signed.get("method", "PUT"), signed["url"], data=data, headers=headers,
                timeout=(min(self.timeout, 30.0), self.timeout), allow_redirects=False)
        except requests.exceptions.RequestException as exc:
            raise NetworkError(f"cannot send a part to the blob store: {_reason(exc)}"
                               ) from exc
        with contextlib.closing(response):
            if response.status_code >= 300:
                text = response.text.strip()[:300]
                raise error_for_status(
                    response.status_code, "store_refused",
                    f"the blob store refused the part: HTTP {response.status_code} {text}")
            return response.headers.get("ETag", "")

    def complete_direct_upload(self, upload_id: str, sha256: str) -> Upload:
        """Complete a direct upload: the session, ``verifying`` until the server has
        checked the whole file's digest (:meth:`wait_verified`)."""
        return Upload.from_json(self._json(
            "PUT", f"uploads/{_segment(upload_id)}", data=b"",
            headers={"Content-Type": "application/octet-stream"},
            params={"digest": DIGEST_PREFIX + sha256}))

    def wait_verified(self, upload: Upload, timeout: float | None = None) -> None:
        """Wait until the server has verified a completed direct upload.

        :raises IntegrityError: the server refused it (its ``error``: a wrong digest...).
        :raises ServerError: still not verified after ``timeout`` seconds.
        """
        deadline = time.monotonic() + (self.timeout * 10 if timeout is None else timeout)
        delay = 0.1
        while upload.status == "verifying":
            if time.monotonic() > deadline:
                raise ServerError(f"{upload.path}: the server did not verify the upload "
                                  f"in time (is its worker running?)", code="not_verified")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                upload = self.get_upload(upload.id)
            except NotFound:  # concluded: the file is the draft's
                upload = replace(upload, status="done")
        if upload.status == "refused":
            error = upload.error or {}
            raise IntegrityError(f"{upload.path}: the server refused the upload: "
                                 f"{error.get('message')}", code=error.get("code"),
                                 details=error.get("details") or {})

    def abort_upload(self, upload_id: str) -> None:
        """Abort an upload session."""
        self.request("DELETE", f"uploads/{_segment(upload_id)}")

    # ------------------------------------------------------------------ push / pull

    def push(
        self,
        directory: str | Path,
        model: str,
        *,
        tags: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
        description: str = "",
        alias: str | None = None,
        progress: Any = None,
        wait: float = 600.0,
        exclude: Iterable[str] = (),
        include: Iterable[str] = (),
    ) -> PushResult:
        """Push every file under ``directory`` as a new version of ``model`` (created if
        missing), finalize it, check its digest, and point ``alias`` at it.

        Files that the ignore rules leave out are not pushed: ``.git/``, ``__pycache__/``,
        ``*.pyc``, ``.DS_Store`` and editor swap files by default, the patterns of the
        directory's ``.modelregignore`` (gitignore syntax) and ``exclude``; with ``include``,
        only files matching one of its patterns (see
        :class:`~modelreg_client.manifest.IgnoreRules`).

        Files are hashed locally first.  If a ready version identical to this push exists
        (the same files, metadata, lineage, description, and the tags given already set),
        nothing is uploaded and nothing about it changes: it is returned (aliased as asked).
        A push that differs in any of these makes a new version.
        Files whose content the server already holds (in any version the caller may read)
        are added by digest without sending their bytes (:meth:`link_file`); only the others
        are uploaded.  An interrupted push resumes on the next call with the same arguments:
        files the draft already holds are skipped and upload sessions continue from their
        offset.

        :param progress: a :class:`~modelreg_client.transfer.Progress` to report to.
        :raises VersionRejected: validation rejected the version (it holds the problems).
        :raises IntegrityError: the server's digest differs from the local one.
        """
        rules = IgnoreRules(Path(directory), exclude=exclude, include=include)
        return Pusher(self, progress).push(
            Path(directory), model, tags=tags or {}, metadata=metadata, lineage=lineage,
            description=description, alias=alias, wait=wait, rules=rules)

    def pull(
        self, ref: str | FileList, destination: str | Path | None = None, *,
        progress: Any = None, include: Iterable[str] = (), exclude: Iterable[str] = (),
        paths: Iterable[str] = (), cache: bool | None = None, offline: bool | None = None,
        refresh: bool = False,
    ) -> PullResult:
        """Download the files of a version (``model/3``, ``model@alias``,
        ``model@sha256:…``, ``model`` for the latest) into ``destination``.

        Files download in parallel to ``<name>.part``, resume with ``Range`` when a partial
        file is there, and are renamed into place only once their sha256 is verified; files
        already present with the right content are left alone.

        :param paths: only these files, or folders with everything under them.
        :param include: only files matching one of these gitignore-style patterns.
        :param exclude: not the files matching one of these patterns.
        :param cache: go through the local cache (:attr:`cache`): each file is downloaded
            once for every version and destination that holds it, and ``destination`` gets
            copies of the cached files.  The default: only when no ``destination`` is given
            (then the files stay in the cache, at ``result.cache_path``) or offline; a pull
            into a destination without the cache downloads straight into it, as the Hub's
            ``local_dir`` downloads do.  The ``modelreg pull`` command uses the cache unless
            told ``--no-cache``.
        :param offline: never ask the server: the ref resolves to what it last resolved to
            in the cache, and only cached files are found (default: ``MODELREG_OFFLINE``).
            Online, a server that cannot be reached makes a cached ref resolve the same way.
        :param refresh: require the server's answer: no fallback to the cache.
        :raises IntegrityError: a file's bytes do not match its sha256 (no final file is
            written for it).
        :raises UnwritablePath: a path cannot be written (nothing was written).
        :raises NotCached: offline, and the cache lacks the ref or a file.
        """
        offline = offline_setting() if offline is None else offline
        use_cache = (destination is None or offline) if cache is None else cache
        if offline and refresh:
            raise ValueError("offline and refresh exclude each other")
        if not use_cache and (destination is None or offline):
            raise ValueError("a pull without the cache needs a destination and the server")
        select = PathFilter(include=include, exclude=exclude, paths=paths)
        return Puller(self, progress).pull(
            ref, None if destination is None else Path(destination),
            cache=self.cache if use_cache else None, select=select, offline=offline,
            refresh=refresh)

    def resolve(self, ref: str, *, offline: bool | None = None,
                refresh: bool = False) -> FileList:
        """The version ``ref`` names and its files, recorded in the cache; offline (or
        when the server cannot be reached, unless ``refresh``) what the cache recorded."""
        offline = offline_setting() if offline is None else offline
        return Puller(self).resolve(ref, cache=self.cache, offline=offline,
                                    refresh=refresh)[0]

    def path(
        self, ref: str, *, include: Iterable[str] = (), exclude: Iterable[str] = (),
        paths: Iterable[str] = (), offline: bool | None = None, refresh: bool = False,
        progress: Any = None,
    ) -> Path:
        """The directory of version ``ref`` in the local cache, its (selected) files pulled
        first if they are not there yet — for code that loads a model from a folder::

            model = AutoModel.from_pretrained(client.path("fraud-detector@champion"))

        The files there are links into the cache (or copies where links are refused): read
        them, do not edit them.  Parameters as for :meth:`pull`.
        """
        result = self.pull(ref, None, progress=progress, include=include, exclude=exclude,
                           paths=paths, cache=True, offline=offline, refresh=refresh)
        return Path(result.cache_path or result.destination)


def _reason(exc: Exception) -> str:
    """The innermost reason of a requests exception, without the pool's noise."""
    reason: Any = exc
    for _ in range(4):
        inner = getattr(reason, "reason", None) or (reason.args[0] if reason.args else None)
        if not isinstance(inner, BaseException):
            break
        reason = inner
    return str(reason) or type(reason).__name__
