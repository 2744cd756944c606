"""Pushing a directory as a version and pulling a version into a directory.

:class:`Pusher` (behind :meth:`Client.push`):

1. hashes every file locally (sha256, streamed, in parallel) and computes the version digest
   (:func:`~modelreg_client.manifest.version_digest`);
2. if a ready version identical to the push exists (the same files, metadata, lineage,
   description and tags: :meth:`Pusher._existing`), uploads nothing and changes nothing;
3. otherwise creates the model if needed and a draft — or takes up the draft of an
   interrupted push of the same content, recorded in a small journal under the state
   directory — and skips the files the draft already holds;
4. adds by digest every other file whose content the server already holds (in any version
   the caller may read: ``POST …/files``), sending no bytes for it;
5. uploads the rest in parallel: a single ``PUT`` up to the server's limit, an upload session
   in numbered parts above it, ``parallel`` parts of a file at once, each with its sha256
   (after an interruption only the parts the server lacks are sent; if the server refuses
   the completion for a wrong digest, only the parts whose digest differs from the local
   file's are sent again); servers without numbered parts get sequential chunks;
6. finalizes, checks the server's digest against the local one, moves the alias.

When no ready version of the model has the push's metadata, lineage, description and tags
(:meth:`Pusher._may_repeat`: one page of ready versions), the push cannot repeat one and
needs a draft whatever its digest: then the draft comes first, and the files sent in more
than one part go while a thread of their own hashes them (each part is hashed as it is
sent; the whole file's digest is needed only to complete its session, and a file the server
turns out to hold is added by digest instead, the parts not yet sent left unsent).  Such a
push resumes by its files' paths, sizes and modification times instead of its digest.

:class:`Puller` (behind :meth:`Client.pull`) downloads each file to ``<name>.part``, resumes a
partial file with ``Range``, verifies the sha256 and only then renames it into place.  Through
the local cache (:mod:`modelreg_client.cache`) the file downloaded is the blob, under its
lock, once for every version and destination; a destination then gets copies.

Progress goes to a :class:`Progress` (the command line's draws bars); its methods are called
from the worker threads and may raise to abort the transfer.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import mmap
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests
import urllib3

from .cache import Cache, PathFilter
from .config import state_dir as default_state_dir
from .errors import (
    Conflict,
    IntegrityError,
    InvalidRequest,
    NetworkError,
    NotCached,
    NotFound,
    ServerError,
    UnwritablePath,
    VersionRejected,
)
from .manifest import (
    DIGEST_PREFIX,
    FileRegion,
    IgnoreRules,
    LocalFile,
    check_remote_path,
    hash_file,
    scan_directory,
    unwritable_path,
    version_digest,
)
from .refs import parse_ref
from .types import FileEntry, FileList, PullResult, PushResult, Version

if TYPE_CHECKING:
    from .client import Client

__all__ = ["PART_SUFFIX", "Journal", "Progress", "Puller", "Pusher"]

MiB = 1024 * 1024
#: Preferred chunk size of upload sessions (the server's limits bound it).
DEFAULT_CHUNK_SIZE = 64 * MiB
#: The core's floor for chunks (``modelreg.api.MIN_CHUNK_SIZE``; S3 needs 5 MiB parts);
#: files up to this size go in one ``PUT`` before the server has said its limit.
MIN_CHUNK_SIZE = 8 * MiB
#: The most numbered parts of one upload session (the server's limit, S3's).
MAX_PARTS = 10_000
#: Suffix of files being downloaded; renamed away once verified.
PART_SUFFIX = ".part"
#: Bytes received at a time when downloading: one buffer per download, reused for every
#: block (the socket fills it, the hash reads it, the disk takes it), large enough that each
#: direct write to the disk is worth its wait.
DOWNLOAD_BLOCK = 4 * 1024 * 1024
#: The alignment of direct writes (positions, lengths and buffers).
_ALIGN = 4096
_O_DIRECT = getattr(os, "O_DIRECT", 0)
#: Attempts at one file (or one chunk) after a network or server failure.
TRANSFER_ATTEMPTS = 5
#: Ready versions a push looks at to know whether it may repeat one (see ``_may_repeat``).
_CANDIDATES = 100
T = TypeVar("T")


class Progress:
    """Receives the progress of a push or pull; this base class ignores it.

    ``kind`` is ``hash``, ``upload`` or ``download``.  Methods are called from worker threads
    (implementations must be thread-safe) and may raise to stop the transfer: the exception
    comes out of :meth:`Client.push` or :meth:`Client.pull`, and the next call resumes.
    """

    def begin(self, kind: str, files: int, total: int) -> None:
        """A phase starts: ``files`` files of ``total`` bytes in all."""

    def start(self, kind: str, path: str, size: int, done: int = 0) -> None:
        """A file starts, ``done`` of its ``size`` bytes already there (called again when a
        transfer restarts from another point)."""

    def advance(self, kind: str, path: str, nbytes: int) -> None:
        """``nbytes`` more bytes of ``path`` were hashed, sent or received."""

    def finish(self, kind: str, path: str) -> None:
        """A file is done."""

    def end(self, kind: str) -> None:
        """The phase is over."""

    def notice(self, message: str) -> None:
        """Something the person waiting should know, e.g. that the server has no worker to
        validate the version (called from the calling thread)."""


class _Cancelled(Exception):
    """Raised in workers once another worker failed: stop quietly."""


class _Pool:
    """Runs tasks on threads; the first failure cancels the others and is raised."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.cancel = threading.Event()

    def check(self) -> None:
        """Raise :class:`_Cancelled` once the batch has failed."""
        if self.cancel.is_set():
            raise _Cancelled

    def run(self, function: Callable[[T], Any], items: Iterable[T]) -> list[Any]:
        """``function(item)`` for each item, in parallel; results in order."""
        items = list(items)
        if not items:
            return []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="modelreg") as executor:
            futures: list[Future[Any]] = [executor.submit(self._guard, function, item)
                                          for item in items]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    self.cancel.set()
                    wait(futures)
                    errors = [f.exception() for f in futures if f.exception() is not None]
                    first = next((e for e in errors if not isinstance(e, _Cancelled)), errors[0])
                    raise first  # type: ignore[misc]
            except BaseException:
                self.cancel.set()
                raise
        return [f.result() for f in futures]

    def _guard(self, function: Callable[[T], Any], item: T) -> Any:
        self.check()
        return function(item)


class _Counter:
    """A byte count shared by worker threads."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


# ------------------------------------------------------------------------------- push


class Journal:
    """What an unfinished push needs to resume: its draft's number and its upload sessions.

    One small JSON file per (server, model, content, metadata) under the state directory,
    written atomically; removed when the push finishes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.version: int | None = None
        self.uploads: dict[str, str] = {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self.version = data.get("version")
            self.uploads = dict(data.get("uploads") or {})
        except (OSError, ValueError, AttributeError):
            pass

    @classmethod
    def for_push(cls, directory: Path, key: list[Any]) -> Journal:
        """The journal of the push identified by ``key`` (JSON-serializable)."""
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
        return cls(directory / "pushes" / f"{name[:40]}.json")

    def save(self) -> None:
        """Write the journal (atomically)."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary = self.path.with_name(f"{self.path.name}.{threading.get_ident()}.tmp")
            temporary.write_text(json.dumps({"version": self.version, "uploads": self.uploads}),
                                 encoding="utf-8")
            os.replace(temporary, self.path)

    def set_upload(self, path: str, upload_id: str | None) -> None:
        """Record (or forget, with ``None``) the upload session of a file."""
        with self._lock:
            if upload_id is None:
                self.uploads.pop(path, None)
            else:
                self.uploads[path] = upload_id
        self.save()

    def remove(self) -> None:
        """Forget the push: it is finished."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Pusher:
    """One push of a directory (see the module's documentation)."""

    def __init__(self, client: Client, progress: Progress | None = None) -> None:
        self.client = client
        self.progress = progress or Progress()
        self.pool = _Pool(client.parallel)
        #: Parts in flight across every file: at most ``parallel`` at once.
        self.part_slots = threading.Semaphore(client.parallel)
        self.sent = _Counter()
        #: Whether the server can add files by digest (``False`` once it answered 405).
        self._can_link = True

    # ------------------------------------------------------------------- hashing

    def hash_directory(self, directory: Path, rules: IgnoreRules | None = None,
                       left_out: list[str] | None = None) -> list[LocalFile]:
        """Every file under ``directory`` that ``rules`` keep, with its size and sha256 (the
        paths left out are appended to ``left_out``)."""
        return self._hash_found(scan_directory(directory, rules, left_out))

    def _hash_found(self, found: list[tuple[str, Path]]) -> list[LocalFile]:
        """``found`` (``(path, location)`` pairs) with their sizes and sha256, in parallel."""
        sizes = {path: location.stat().st_size for path, location in found}
        self.progress.begin("hash", len(found), sum(sizes.values()))
        files = self.pool.run(lambda item: self._hash_one(*item, sizes[item[0]]), found)
        self.progress.end("hash")
        return files

    def _hash_one(self, path: str, location: Path, size: int) -> LocalFile:
        """The file at ``location`` (``size`` bytes when listed), hashed, with progress."""
        self.progress.start("hash", path, size)

        def advance(n: int) -> None:
            self.pool.check()
            self.progress.advance("hash", path, n)

        size, sha256 = hash_file(location, advance)
        self.progress.finish("hash", path)
        return LocalFile(path, location, size, sha256.hexdigest())

    # ---------------------------------------------------------------------- push

    def push(
        self, directory: Path, model: str, *, tags: dict[str, str],
        metadata: dict[str, Any] | None, lineage: dict[str, Any] | None, description: str,
        alias: str | None, wait: float, rules: IgnoreRules | None = None,
    ) -> PushResult:
        """Push ``directory`` as a version of ``model``; see :meth:`Client.push`."""
        left_out: list[str] = []
        found = scan_directory(directory, rules, left_out)
        if not found:
            raise InvalidRequest(f"{directory} holds no files to push"
                                 + (f" ({len(left_out)} left out by the ignore rules)"
                                    if left_out else ""), code="empty_directory")
        fields = {"tags": tags, "metadata": metadata, "lineage": lineage,
                  "description": description}
        state = self.client.state_dir or default_state_dir()
        early: dict[str, LocalFile] = {}  # sent while hashing: path -> the file, hashed
        early_linked: set[str] = set()
        stats = {path: location.stat() for path, location in found}  # once per file
        large = self._large(found, {path: st.st_size for path, st in stats.items()})
        if large and not self._may_repeat(model, **fields):
            # No ready version can be identical to this push: its draft is needed whatever
            # the digests, so the large files go while they are hashed.
            self._ensure_model(model)
            journal = Journal.for_push(state, [self.client.url, model, [
                [path, stats[path].st_size, stats[path].st_mtime_ns] for path in sorted(stats)],
                metadata, lineage, description, tags])
            version = self._draft(model, journal, **fields)
            number = version.number
            remote = {f.path: f for f in self.client.list_files(model, number).files}
            # A file the draft holds at its size may be complete: it waits for its digest.
            large = [item for item in large
                     if getattr(remote.get(item[0]), "size", None) != stats[item[0]].st_size]
            early, early_linked = self._send_while_hashing(model, number, large, journal)
            rest = [item for item in found if item[0] not in early]
            files = [*early.values(), *(self._hash_found(rest) if rest else [])]
            digest = version_digest(files)
        else:
            files = self._hash_found(found)
            digest = version_digest(files)
            existing = self._existing(model, digest, **fields)
            if existing is not None:
                version = self._label(existing, {}, alias)
                return PushResult(version, digest, True, [], [f.path for f in files], 0,
                                  self.client.list_findings(model, version.number),
                                  excluded_files=left_out)
            self._ensure_model(model)
            journal = Journal.for_push(
                state, [self.client.url, model, digest, metadata, lineage, description, tags])
            version = self._draft(model, journal, **fields)
            number = version.number
            remote = {f.path: f for f in self.client.list_files(model, number).files}
        local = {f.path: f for f in files}
        for path in sorted(remote.keys() - local.keys()):
            self.client.delete_file(model, number, path)
        todo = [f for f in files if f.path not in early and path_differs(remote.get(f.path), f)]
        skipped = [f.path for f in files if f not in todo and f.path not in early]
        linked = self._link_all(model, number, todo, journal) | early_linked
        todo = [f for f in todo if f.path not in linked]
        if todo or not early:
            self._upload_all(model, number, todo, journal)
        uploaded = [f.path for f in todo] + [path for path in early if path not in linked]
        version = self.client.finalize_version(model, number, wait=wait,
                                               on_notice=self.progress.notice)
        journal.remove()
        findings = [] if version.status == "validating" else \
            self.client.list_findings(model, number)
        if version.status == "rejected":
            problems = "; ".join(p.message for p in version.problems) or "no reason given"
            raise VersionRejected(f"version {version.ref} was rejected: {problems}",
                                  version=version, findings=findings)
        if version.status == "ready":
            self._check_digest(version, digest)
            version = self._label(version, {}, alias)
        return PushResult(version, digest, False, uploaded, skipped,
                          self.sent.value, findings, sorted(linked), excluded_files=left_out)

    def _existing(self, model: str, digest: str, *, tags: dict[str, str],
                  metadata: dict[str, Any] | None, lineage: dict[str, Any] | None,
                  description: str) -> Version | None:
        """The oldest ready version identical to this push, or ``None``.

        Identical means the same files (the digest), metadata, lineage and description, and
        every tag this push sets already set to the same value.  A push that differs in any
        of them makes a new version: a version's provenance is never rewritten by a push.
        """
        statement = f"digest = '{digest}' AND status = 'ready'"
        try:
            candidates = self.client.list_versions(model, statement, order_by="number asc")
            for version in candidates:
                if version.digest == digest and _same_fields(
                        version, tags=tags, metadata=metadata, lineage=lineage,
                        description=description):
                    return version
        except NotFound:
            return None
        return None

    def _may_repeat(self, model: str, *, tags: dict[str, str],
                    metadata: dict[str, Any] | None, lineage: dict[str, Any] | None,
                    description: str) -> bool:
        """Whether a ready version of ``model`` has this push's metadata, lineage,
        description and tags, so that only the digest can tell whether the push is one
        already made (also when there are too many ready versions to look at: one page)."""
        try:
            for seen, version in enumerate(self.client.list_versions(
                    model, "status = 'ready'", page_size=_CANDIDATES), 1):
                if seen >= _CANDIDATES or _same_fields(
                        version, tags=tags, metadata=metadata, lineage=lineage,
                        description=description):
                    return True
        except NotFound:
            return False
        return False

    def _ensure_model(self, model: str) -> None:
        try:
            self.client.get_model(model)
        except NotFound:
            try:
                self.client.create_model(model)
            except Conflict as exc:
                if exc.code != "model_exists":
                    raise

    def _draft(self, model: str, journal: Journal, **fields: Any) -> Version:
        """The draft of an interrupted push of the same content, or a new one."""
        if journal.version is not None:
            try:
                version = self.client.get_version(model, journal.version)
            except NotFound:
                version = None
            if version is not None and version.status == "draft":
                return version
            journal.uploads = {}
        version = self.client.create_version(model, **fields)
        journal.version = version.number
        journal.uploads = {}
        journal.save()
        return version

    def _label(self, version: Version, tags: dict[str, str], alias: str | None) -> Version:
        """Set tags and the alias on a ready version; return it as the server now has it."""
        for key, value in tags.items():
            if version.tags.get(key) != value:
                self.client.set_version_tag(version.model, version.number, key, value)
        if alias:
            self.client.set_alias(version.model, alias, version.number)
        if tags or alias:
            return self.client.get_version(version.model, version.number)
        return version

    @staticmethod
    def _check_digest(version: Version, digest: str) -> None:
        if version.digest != digest:
            raise IntegrityError(
                f"version {version.ref} has digest {version.digest} on the server but "
                f"{digest} here: the files did not arrive as they are",
                code="digest_mismatch",
                details={"server": version.digest, "local": digest})

    # ------------------------------------------------------------------- linking

    def _link_all(self, model: str, number: int, files: list[LocalFile],
                  journal: Journal) -> set[str]:
        """Add by digest the files whose content the server holds; their paths."""
        candidates = files
        if not candidates or not self._can_link:
            return set()

        def one(file: LocalFile) -> str | None:
            return file.path if self._link(model, number, file, journal) else None

        # The first alone: a server without linking says so once, not once per thread.
        first = one(candidates[0])
        found = self.pool.run(one, candidates[1:]) if self._can_link else []
        return {path for path in [first, *found] if path is not None}

    def _link(self, model: str, number: int, file: LocalFile, journal: Journal, *,
              keep_session: bool = False) -> bool:
        """Whether the server added ``file`` by its digest (else it must be uploaded); the
        session of an interrupted push is then aborted (unless ``keep_session``: the
        caller still sends to it and aborts it once the sending has stopped)."""
        if not self._can_link:
            return False
        try:
            self.client.link_file(model, number, file.path, file.sha256, size=file.size)
        except NotFound as exc:
            if exc.code != "blob_not_found":
                raise
            return False
        except InvalidRequest as exc:
            if exc.status == 405:  # a server without linking: upload everything
                self._can_link = False
                return False
            raise
        except (NetworkError, ServerError):
            return False  # the upload that follows retries
        if not keep_session:  # a session of an interrupted push is no longer needed
            self._drop_session(file.path, journal)
        return True

    # ------------------------------------------------------------------- uploading

    def _large(self, found: list[tuple[str, Path]],
               sizes: dict[str, int]) -> list[tuple[str, Path]]:
        """The files of ``found`` (of ``sizes``) sent in more than one part, largest first."""
        client = self.client
        floor = max(client.max_put_size or _floor(client), client.chunk_size)
        return sorted([item for item in found if sizes[item[0]] > floor],
                      key=lambda item: sizes[item[0]], reverse=True)

    def _send_while_hashing(self, model: str, number: int, large: list[tuple[str, Path]],
                            journal: Journal) -> tuple[dict[str, LocalFile], set[str]]:
        """Upload the ``large`` files (``(path, location)``) one after the other, each in
        ``parallel`` parts at once, while a thread of its own hashes them in the same order:
        a part's digest is computed as it is sent, the whole file's is needed only to
        complete.  A file whose bytes the server turns out to hold once its digest is known
        is added by digest instead (its session is dropped, its parts not yet sent never
        go).  Returns the files, hashed, and the paths added by digest."""
        sizes = {path: location.stat().st_size for path, location in large}
        stops = {path: threading.Event() for path in sizes}
        self.progress.begin("hash", len(large), sum(sizes.values()))
        self.progress.begin("upload", len(large), sum(sizes.values()))

        def hash_then_link(path: str, location: Path) -> tuple[LocalFile, bool]:
            file = self._hash_one(path, location, sizes[path])
            if self._link(model, number, file, journal, keep_session=True):
                stops[path].set()
                return file, True
            return file, False

        files: dict[str, LocalFile] = {}
        linked: set[str] = set()
        with ThreadPoolExecutor(1, thread_name_prefix="modelreg-hash") as hasher:
            pending = [(path, location, hasher.submit(hash_then_link, path, location))
                       for path, location in large]
            try:
                for path, location, hashed in pending:
                    file = LocalFile(path, location, sizes[path], "")
                    try:
                        session = self._session_for(model, number, file, journal)
                        if not stops[path].is_set():
                            self._send_parts(
                                file, session, journal, stop=stops[path],
                                digest=lambda hashed=hashed: hashed.result()[0].sha256)
                    except Exception:
                        if not stops[path].is_set():
                            raise
                    files[path], added = hashed.result()
                    if added:  # the parts sent are not needed: the server had the bytes
                        linked.add(path)
                        self._drop_session(path, journal)
                    self.progress.finish("upload", path)
            except BaseException:
                self.pool.cancel.set()  # the hashing stops at its next block
                raise
        self.progress.end("hash")
        self.progress.end("upload")
        return files, linked

    def _drop_session(self, path: str, journal: Journal) -> None:
        """Abort the upload session of ``path`` the journal holds, if any."""
        upload_id = journal.uploads.get(path)
        if upload_id is not None:
            with contextlib.suppress(NotFound, Conflict, NetworkError, ServerError):
                self.client.abort_upload(upload_id)
            journal.set_upload(path, None)

    def _upload_all(self, model: str, number: int, files: list[LocalFile],
                    journal: Journal) -> None:
        files = sorted(files, key=lambda f: -f.size)
        self.progress.begin("upload", len(files), sum(f.size for f in files))
        client = self.client
        first_session = None
        # The server says its single-PUT limit in upload sessions: learn it from the largest
        # file's session (needed anyway if that file is over the limit) before deciding how
        # to send the others.
        if files and client.max_put_size is None and files[0].size > _floor(client):
            first_session = self._session_for(model, number, files[0], journal)

        def one(file: LocalFile) -> None:
            session = first_session if file is files[0] else None
            self._upload(model, number, file, journal, session)

        self.pool.run(one, files)
        self.progress.end("upload")

    def _session_for(self, model: str, number: int, file: LocalFile, journal: Journal) -> Any:
        """The file's upload session: the journal's (if still open) or a new one, in
        numbered parts where the server offers them."""
        upload_id = journal.uploads.get(file.path)
        if upload_id is not None:
            try:
                upload = self.client.get_upload(upload_id)
                if getattr(upload, "status", "open") == "open":
                    return upload
                with contextlib.suppress(NotFound, Conflict):  # refused: start again
                    self.client.abort_upload(upload_id)
                journal.set_upload(file.path, None)
            except NotFound:
                journal.set_upload(file.path, None)
        client = self.client
        part_size = max(client.chunk_size, client.min_chunk_size or MIN_CHUNK_SIZE,
                        -(-file.size // MAX_PARTS))
        if client.max_put_size:
            part_size = min(part_size, client.max_put_size)
        try:
            upload = self._open_direct(model, number, file, part_size)
        except InvalidRequest as exc:
            if exc.code == "invalid_part_size" and "max_part_size" in exc.details:
                part_size = min(max(part_size, exc.details["min_part_size"]),
                                exc.details["max_part_size"])
                upload = self._open_direct(model, number, file, part_size)
            elif exc.status in (400, 422) and exc.code in ("invalid_body", "invalid_request",
                                                           "validation_error"):
                upload = client.open_upload(model, number, file.path, size=file.size,
                                            sha256=file.sha256)  # no numbered parts
            else:
                raise
        journal.set_upload(file.path, upload.id)
        return upload

    def _open_direct(self, model: str, number: int, file: LocalFile, part_size: int) -> Any:
        """Open a session in parts, offering to send them straight to the blob store (a
        server before direct uploads refuses the field: then without it)."""
        client = self.client
        try:
            return client.open_upload(model, number, file.path, size=file.size,
                                      sha256=file.sha256, part_size=part_size, direct=True)
        except InvalidRequest as exc:
            problems = exc.details.get("problems") or []
            if exc.code != "invalid_body" or not any(
                    isinstance(p, dict) and p.get("field") == "direct" for p in problems):
                raise
        return client.open_upload(model, number, file.path, size=file.size,
                                  sha256=file.sha256, part_size=part_size)

    def _upload(self, model: str, number: int, file: LocalFile, journal: Journal,
                session: Any) -> None:
        client = self.client
        if session is None and file.path in journal.uploads:
            session = self._session_for(model, number, file, journal)
        limit = client.max_put_size or _floor(client)
        if session is None and file.size <= limit:
            self._put(model, number, file)
        else:
            if session is None:
                session = self._session_for(model, number, file, journal)
            if session.part_size:
                self._send_parts(file, session, journal)
            else:
                self._send_chunks(file, session, journal)
        self.progress.finish("upload", file.path)

    def _on_block(self, path: str) -> Callable[[int], None]:
        def on_block(n: int) -> None:
            self.pool.check()
            self.sent.add(n)
            self.progress.advance("upload", path, n)
        return on_block

    def _put(self, model: str, number: int, file: LocalFile) -> None:
        for attempt in _attempts():
            self.progress.start("upload", file.path, file.size)
            try:
                self.client.upload_file(model, number, file.path, file.source,
                                        sha256=file.sha256, on_block=self._on_block(file.path))
                return
            except (NetworkError, ServerError):
                if attempt == TRANSFER_ATTEMPTS:
                    raise

    def _send_chunks(self, file: LocalFile, session: Any, journal: Journal) -> None:
        client = self.client
        chunk = min(max(client.chunk_size, session.min_chunk_size), session.max_chunk_size)
        offset = session.offset
        failures = 0
        while True:
            self.progress.start("upload", file.path, file.size, offset)
            try:
                while offset < file.size:
                    length = min(chunk, file.size - offset)
                    body = FileRegion(file.source, offset, length, self._on_block(file.path))
                    offset = client.upload_chunk(session.id, offset, body).offset
                client.complete_upload(session.id, file.sha256)
                journal.set_upload(file.path, None)
                return
            except (NetworkError, ServerError, InvalidRequest) as exc:
                # A broken connection, a busy server or a chunk that no longer starts at the
                # session's offset: ask where the session stands and go on from there.
                if isinstance(exc, InvalidRequest) and exc.code != "chunk_out_of_order":
                    raise
                failures += 1
                if failures >= TRANSFER_ATTEMPTS:
                    raise
                time.sleep(min(0.5 * 2 ** failures, 10))
                offset = client.get_upload(session.id).offset

    def _send_direct(self, file: LocalFile, session: Any, journal: Journal,
                     digest: Callable[[], str], stop: threading.Event | None) -> None:
        """A direct upload (``session.direct``): each part the store lacks goes straight to
        the blob store at the presigned URL the server signs for it, ``parallel`` at once;
        then complete, and wait until the server has verified the whole file's digest."""
        client = self.client
        size, count = session.part_size, -(-file.size // session.part_size)
        held = {part.number for part in session.parts
                if part.size == min(size, file.size - (part.number - 1) * size)}
        self.progress.start("upload", file.path, file.size,
                            sum(min(size, file.size - (n - 1) * size) for n in held))

        def to_store(number: int, region: FileRegion, digest: str) -> None:
            client.send_to_store(client.part_url(session.id, number, digest), region)

        self._send_part_numbers(file, session, [n for n in range(1, count + 1)
                                                if n not in held], to_store, stop)
        sha256 = digest()
        if stop is not None and stop.is_set():
            return
        upload = client.complete_direct_upload(session.id, sha256)
        try:
            client.wait_verified(upload)
        finally:
            if upload.status != "open":
                journal.set_upload(file.path, None)

    def _send_parts(self, file: LocalFile, session: Any, journal: Journal, *,
                    digest: Callable[[], str] | None = None,
                    stop: threading.Event | None = None) -> None:
        """Send the parts the session lacks, ``parallel`` at once, then complete; if the
        server finds the whole digest wrong, send again the parts whose digest differs from
        the local file's (the others stay on the server) and complete once more.

        :param digest: the whole file's sha256, once its parts are sent (by default
            ``file.sha256``: known before).
        :param stop: once set, no more parts are sent and the session is not completed.
        """
        digest = digest or (lambda: file.sha256)
        if getattr(session, "direct", False):
            self._send_direct(file, session, journal, digest, stop)
            return
        client = self.client
        size, count = session.part_size, -(-file.size // session.part_size)
        held = {part.number: part.sha256 for part in session.parts}
        self.progress.start("upload", file.path, file.size,
                            sum(min(size, file.size - (n - 1) * size) for n in held))
        todo = [n for n in range(1, count + 1) if n not in held]
        for round_ in range(2):
            self._send_part_numbers(file, session, todo, stop=stop)
            sha256 = digest()
            if stop is not None and stop.is_set():
                return
            try:
                client.complete_upload(session.id, sha256)
            except InvalidRequest as exc:
                if exc.code != "digest_mismatch" or "parts" not in exc.details or round_:
                    raise
                # What the server holds differs from the file: compare part by part.
                stored = {p["number"]: (p.get("digest") or "").removeprefix(DIGEST_PREFIX)
                          for p in exc.details["parts"]}
                todo = [n for n in range(1, count + 1)
                        if stored.get(n) != self._part_digest(file, size, n)]
                if not todo:
                    raise IntegrityError(
                        f"{file.path}: the server holds exactly the local parts, yet their "
                        f"sha256 is not the file's (did the file change during the push?)",
                        code="digest_mismatch") from exc
                for n in todo:
                    if n in stored:
                        client.delete_part(session.id, n)
                continue
            journal.set_upload(file.path, None)
            return

    @staticmethod
    def _part_digest(file: LocalFile, size: int, number: int) -> str:
        start = (number - 1) * size
        digest = hashlib.sha256()
        for block in FileRegion(file.source, start, min(size, file.size - start)):
            digest.update(block)
        return digest.hexdigest()

    def _send_part_numbers(
        self, file: LocalFile, session: Any, numbers: list[int],
        put: Callable[[int, FileRegion, str], Any] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Send the parts ``numbers`` of ``file`` on up to ``parallel`` threads with
        ``put(number, region, digest)`` (by default through the app: ``upload_part``); the
        first failure stops the others, as does ``stop`` once set (the parts not started
        then are not sent)."""
        if not numbers:
            return
        client, size = self.client, session.part_size
        if put is None:
            def put(number: int, region: FileRegion, digest: str) -> None:
                client.upload_part(session.id, number, region, digest)
        failed = threading.Event()
        on_block = self._on_block(file.path)

        def guarded(n: int) -> None:
            if failed.is_set():
                raise _Cancelled
            on_block(n)

        def send(number: int) -> None:
            if stop is not None and stop.is_set():
                return
            start = (number - 1) * size
            length = min(size, file.size - start)
            digest = self._part_digest(file, size, number)
            for attempt in _attempts():
                if failed.is_set():
                    raise _Cancelled
                try:
                    with self.part_slots:
                        put(number, FileRegion(file.source, start, length, guarded), digest)
                    return
                except Conflict as exc:
                    # Another request of ours still sends it (a retry after a lost answer).
                    if exc.code != "part_in_progress" or attempt == TRANSFER_ATTEMPTS:
                        raise
                except (NetworkError, ServerError):
                    if attempt == TRANSFER_ATTEMPTS:
                        raise
                time.sleep(min(0.5 * 2 ** attempt, 10))

        workers = max(1, min(client.parallel, len(numbers)))
        with ThreadPoolExecutor(workers, thread_name_prefix="modelreg-part") as executor:
            futures = [executor.submit(send, n) for n in numbers]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in done):
                failed.set()
                wait(futures)
                errors = [f.exception() for f in futures if f.exception() is not None]
                raise next((e for e in errors if not isinstance(e, _Cancelled)), errors[0])


def _same_fields(version: Version, *, tags: dict[str, str], metadata: dict[str, Any] | None,
                 lineage: dict[str, Any] | None, description: str) -> bool:
    """Whether ``version`` has this push's metadata, lineage and description, and every tag
    the push sets already set to the same value (all that makes a push identical to a
    ready version, but its files)."""
    return (version.metadata == (metadata or {})
            and _stated(version.lineage) == _stated(lineage or {})
            and version.description == description
            and all(version.tags.get(k) == v for k, v in tags.items()))


def _stated(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that hold a value (the server lists lineage fields never given as empty)."""
    return {key: value for key, value in fields.items() if value not in (None, "", [], {})}


def path_differs(remote: FileEntry | None, local: LocalFile) -> bool:
    """Whether the draft lacks ``local`` (no such path, or other bytes there)."""
    return remote is None or remote.sha256 != local.sha256 or remote.size != local.size


def _floor(client: Client) -> int:
    """Files up to this size go in one ``PUT`` before the server's limit is known."""
    return client.min_chunk_size or MIN_CHUNK_SIZE


def _attempts() -> range:
    return range(1, TRANSFER_ATTEMPTS + 1)


# ------------------------------------------------------------------------------- pull


class Puller:
    """One pull of a version into a directory (see the module's documentation)."""

    def __init__(self, client: Client, progress: Progress | None = None) -> None:
        self.client = client
        self.progress = progress or Progress()
        self.pool = _Pool(client.parallel)
        self.received = _Counter()

    def resolve(self, ref: str, *, cache: Cache | None = None, offline: bool = False,
                refresh: bool = False) -> tuple[FileList, bool]:
        """The version ``ref`` names and its files, and whether they came from the cache
        rather than the server.

        With a ``cache``: ``offline`` never asks the server (the ref resolves to what it last
        resolved to); otherwise the server is asked, the answer recorded, and if the server
        cannot be reached the cached answer is used (with a notice) unless ``refresh``.
        The server is asked conditionally (``If-None-Match`` with the ``ETag`` of the answer
        the cache recorded): ``304 Not Modified`` confirms the cached resolution without
        sending the listing again.
        """
        parsed = parse_ref(ref)
        version_ref = parsed.version or "latest"
        if cache is not None and offline:
            return _checked(cache.lookup(parsed.model, version_ref)), True
        try:
            listing, etag = self._ask(parsed.model, version_ref, cache)
        except NetworkError as exc:
            if cache is None or refresh:
                raise
            try:
                listing = _checked(cache.lookup(parsed.model, version_ref))
            except NotCached:
                raise exc from None
            self.progress.notice(
                f"{exc.message}; using {listing.model}/{listing.version} from the cache, "
                f"what {parsed} resolved to when last asked (--refresh to require the server)")
            return listing, True
        if cache is not None:
            cache.remember(listing, version_ref, etag)
        return listing, False

    def _ask(self, model: str, ref: str, cache: Cache | None) -> tuple[FileList, str | None]:
        """The server's listing of ``ref`` and its ``ETag``; with a ``cache`` that recorded
        an answer for ``ref`` (and still holds its listing), asked conditionally and taken
        from the cache on ``304``."""
        cached, known = None, cache.validator(model, ref) if cache is not None else None
        if cache is not None and known is not None:
            try:
                cached = cache.lookup(model, ref)
            except NotCached:
                known = None
        listing, etag = self.client.list_files_if_changed(model, ref, known)
        if listing is None and cached is not None:
            return _checked(cached), etag
        if listing is None:  # a 304 to a request that named no ETag: not a registry's answer
            raise ServerError(f"{model}@{ref}: the server answered 304 to a request without "
                              "If-None-Match", code="invalid_response", status=304)
        return _checked(listing), etag
        listing, etag = self.client.list_files_if_changed(model, ref, None)
        return _checked(listing), etag

    def pull(self, ref: str | FileList, destination: Path | None, *, cache: Cache | None = None,
             select: PathFilter | None = None, offline: bool = False,
             refresh: bool = False) -> PullResult:
        """Download the version ``ref`` (or an already resolved listing) into
        ``destination``, through ``cache`` when given; see :meth:`Client.pull`."""
        if isinstance(ref, FileList):
            listing, from_cache = ref, False
        else:
            listing, from_cache = self.resolve(ref, cache=cache, offline=offline,
                                               refresh=refresh)
        files = (select or PathFilter()).select(listing)
        root = None if destination is None else destination.resolve()
        targets = {} if root is None else {f.path: self._target(root, f.path) for f in files}
        # Every path checked before anything is written: no pull stops half-way on a name
        # this system cannot hold.
        if root is not None:
            _check_writable(targets, root, str(destination))
        if cache is not None:
            tree = cache.tree(listing.model, listing.version).resolve()
            _check_writable({f.path: self._target(tree, f.path) for f in files}, tree,
                            f"the cache ({tree})")
            return self._pull_cached(listing, files, cache, destination, targets, from_cache,
                                     offline)
        assert root is not None and destination is not None
        destination.mkdir(parents=True, exist_ok=True)
        todo = [f for f in files if not _has_content(targets[f.path], f)]
        skipped = [f.path for f in files if f not in todo]
        self.progress.begin("download", len(todo), sum(f.size for f in todo))
        # Pin the number: an alias could move while the files download.
        number = listing.version

        def one(file: FileEntry) -> None:
            self._download(listing.model, number, file, targets[file.path])

        # The largest first, so that a big file does not start last and finish alone.
        self.pool.run(one, sorted(todo, key=lambda f: -f.size))
        self.progress.end("download")
        return PullResult(listing.model, listing.version, listing.digest, str(destination),
                          files, [f.path for f in todo], skipped, self.received.value)

    def _pull_cached(self, listing: FileList, files: list[FileEntry], cache: Cache,
                     destination: Path | None, targets: dict[str, Path], from_cache: bool,
                     offline: bool) -> PullResult:
        """Fetch the blobs the cache lacks (each under its lock), link them into the
        version's tree, then copy the files into ``destination`` if one was given."""
        tree = cache.tree(listing.model, listing.version).resolve()
        cache.remember(listing, None)
        entries = {f.path: self._target(tree, f.path) for f in files}
        todo = [f for f in files if not cache.holds(entries[f.path], f)]
        fetch = {f.sha256: f for f in todo if not cache.blob(f.sha256).is_file()}
        if offline and fetch:
            missing = sorted(f.path for f in todo if f.sha256 in fetch)
            raise NotCached(
                f"offline, and the cache lacks {len(missing)} file(s) of "
                f"{listing.model}/{listing.version}: {', '.join(missing[:5])}"
                + (" …" if len(missing) > 5 else ""), details={"paths": missing})
        self.progress.begin("download", len(fetch), sum(f.size for f in fetch.values()))
        downloaded: list[str] = []
        record = threading.Lock()

        def one(file: FileEntry) -> None:
            with cache.lock(file.sha256):
                blob = cache.blob(file.sha256)
                if not (blob.is_file() and blob.stat().st_size == file.size):
                    self._download(listing.model, listing.version, file, blob)
                    with record:
                        downloaded.append(file.path)
                cache.place(file, entries[file.path])

        self.pool.run(one, sorted(todo, key=lambda f: -f.size))
        self.progress.end("download")
        skipped = [f.path for f in files if f not in todo]
        if destination is not None:
            destination.mkdir(parents=True, exist_ok=True)
            skipped = []
            for file in files:
                target = targets[file.path]
                if _has_content(target, file):
                    skipped.append(file.path)
                    continue
                # A copy, not a link: the files of a destination are the user's to edit,
                # and an edit must not reach the cache (the Hub's local_dir copies too).
                target.parent.mkdir(parents=True, exist_ok=True)
                temporary = target.with_name(target.name + PART_SUFFIX)
                shutil.copyfile(cache.blob(file.sha256), temporary)
                os.replace(temporary, target)
        return PullResult(listing.model, listing.version, listing.digest,
                          str(destination if destination is not None else tree), files,
                          sorted(downloaded), sorted(skipped), self.received.value,
                          cache_path=str(tree), resolved_offline=from_cache)

    @staticmethod
    def _target(root: Path, path: str) -> Path:
        try:
            relative = check_remote_path(path)
        except ValueError as exc:
            raise IntegrityError(str(exc), code="unsafe_path") from exc
        target = root.joinpath(*relative.parts)
        if root not in target.parent.resolve().parents and target.parent.resolve() != root:
            raise IntegrityError(f"refusing {path!r}: it leads out of {root}",
                                 code="unsafe_path")
        return target

    def _download(self, model: str, number: int, file: FileEntry, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent.resolve() != target.parent.absolute().resolve():  # pragma: no cover
            raise IntegrityError(f"refusing {file.path!r}: a link in its way",
                                 code="unsafe_path")
        part = target.with_name(target.name + PART_SUFFIX)
        fresh_tried = False
        failures = 0
        while True:
            have = part.stat().st_size if part.exists() else 0
            if have > file.size:
                part.unlink()
                have = 0
            fresh_tried = fresh_tried or have == 0
            try:
                sha256 = self._fetch(model, number, file, part, have)
            except (NetworkError, ServerError):
                failures += 1
                if failures >= TRANSFER_ATTEMPTS:
                    raise
                time.sleep(min(0.5 * 2 ** failures, 10))
                continue
            if sha256 == file.sha256 and part.stat().st_size == file.size:
                os.replace(part, target)
                self.progress.finish("download", file.path)
                return
            part.unlink()
            if fresh_tried:
                raise IntegrityError(
                    f"{file.path}: the downloaded bytes have sha256 {sha256}, not "
                    f"{file.sha256}; the file was not written", code="corrupted_download",
                    details={"path": file.path, "expected": DIGEST_PREFIX + file.sha256,
                             "actual": DIGEST_PREFIX + sha256})
            # The partial file we resumed may have been the broken part: start afresh once.

    def _fetch(self, model: str, number: int, file: FileEntry, part: Path, have: int) -> str:
        """Append the rest of the file to ``part``; return the sha256 of the whole."""
        digest = hashlib.sha256()
        if have:
            digest = hash_file(part, limit=have)[1]
        if have == file.size:
            part.touch()  # an empty file has nothing to fetch
            self.progress.start("download", file.path, file.size, have)
            return digest.hexdigest()
        response = self.client.open_file(model, number, file.path, start=have,
                                         etag=file.sha256)
        with response:
            if have and response.status_code != 206:
                have, digest = 0, hashlib.sha256()  # the server sent the whole file
            self.progress.start("download", file.path, file.size, have)
            # One reused, page-aligned buffer, filled whole from the socket before it is
            # hashed and written: whole blocks go to the file with O_DIRECT where the
            # filesystem allows (no copy into the page cache, see _DownloadWriter).
            buffer = memoryview(mmap.mmap(-1, DOWNLOAD_BLOCK))
            read, finish = _body_reader(response)
            with open(part, "r+b" if have else "wb", buffering=0) as out:
                out.seek(have)
                out.truncate()
                writer = _DownloadWriter(out, part, have, self.client.direct_writes)
                written = have
                try:
                    while n := _fill(read, buffer):
                        self.pool.check()
                        written += n
                        if written > file.size:
                            raise IntegrityError(
                                f"{file.path}: the server sent more than its {file.size} "
                                "bytes", code="corrupted_download")
                        block = buffer[:n]
                        digest.update(block)
                        writer.write(block)
                        self.received.add(n)
                        self.progress.advance("download", file.path, n)
                        if n < len(buffer):
                            break
                    finish()
                except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
                        http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                    raise NetworkError(f"{file.path}: the download broke off: {exc}") from exc
                finally:
                    writer.close()
                    if written == 0:  # nothing worth resuming from
                        part.unlink(missing_ok=True)
        return digest.hexdigest()


def _checked(listing: FileList) -> FileList:
    """``listing``, once its files are found to match its digest."""
    if listing.digest is not None and version_digest(listing.files) != listing.digest:
        raise IntegrityError(
            f"the file list of {listing.model}/{listing.version} does not match its "
            f"digest {listing.digest}", code="digest_mismatch")
    return listing


def _check_writable(targets: dict[str, Path], root: Path, where: str) -> None:
    """Refuse (nothing written) when a path cannot be written under ``root``."""
    problem = unwritable_path(targets, root)
    if problem is not None:
        path, reason = problem
        raise UnwritablePath(f"cannot write {path!r} into {where}: {reason}; "
                             "nothing was written", details={"path": path, "reason": reason})


def _body_reader(response: requests.Response
                 ) -> tuple[Callable[[memoryview], int], Callable[[], None]]:
    """``(read, finish)`` for a streaming response's body: ``read(view)`` reads into
    ``view`` and returns how many bytes (0 at the end); ``finish()``, once ``read`` returned
    0, checks the length.

    A body without content coding is read straight from the socket into the buffer through
    the standard library's response under urllib3's (one copy, no allocation per block), and
    ``finish`` gives the connection back to the pool once the body is complete; anything
    else goes through urllib3's decoding reads.

    :raises http.client.IncompleteRead: (from ``finish``) the connection ended before
        ``Content-Length`` bytes.
    """
    raw = response.raw
    fp = getattr(raw, "_fp", None)
    coding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if isinstance(fp, http.client.HTTPResponse) and coding in ("", "identity"):
        expected = response.headers.get("Content-Length")
        got = 0

        def read(view: memoryview) -> int:
            nonlocal got
            n = fp.readinto(view)
            got += n
            return n

        def finish() -> None:
            if expected is not None and expected.isdigit() and got != int(expected):
                raise http.client.IncompleteRead(b"", int(expected) - got)
            if fp.isclosed():
                raw.release_conn()  # the body is complete: the connection can serve again

        return read, finish

    def decoded(view: memoryview) -> int:
        block = raw.read(len(view), decode_content=True)
        view[:len(block)] = block
        return len(block)

    return decoded, lambda: None


def _fill(read: Callable[[memoryview], int], buffer: memoryview) -> int:
    """Read into ``buffer`` until it is full or the body ends; how many bytes it holds."""
    filled = 0
    while filled < len(buffer):
        n = read(buffer[filled:])
        if not n:
            break
        filled += n
    return filled


class _DownloadWriter:
    """Writes a download's blocks one after the other into ``out`` from ``position``.

    Whole blocks of :data:`_ALIGN` bytes at aligned positions go through a second
    descriptor opened with ``O_DIRECT`` (where the OS and filesystem allow it): from the
    buffer straight to the disk, without the copy into the page cache, which on the
    virtual machines measured costs more CPU than the copy itself (``docs/performance.md``,
    "Uploads and pulls").  The rest (a last partial block, or everything when direct I/O is
    refused or off) is written through ``out``.
    """

    def __init__(self, out: Any, path: Path, position: int, direct: bool) -> None:
        self.out = out
        self.position = position
        self.direct: int | None = None
        if direct and _O_DIRECT and position % _ALIGN == 0:
            try:
                self.direct = os.open(path, os.O_WRONLY | _O_DIRECT)
            except OSError:  # tmpfs and others: through the page cache
                self.direct = None

    def write(self, block: memoryview) -> None:
        if self.direct is not None and self.position % _ALIGN == 0:
            whole = len(block) - len(block) % _ALIGN
            done = 0
            try:
                while done < whole:
                    n = os.pwrite(self.direct, block[done:whole], self.position + done)
                    done += n
                    if n % _ALIGN:
                        break
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.close()  # refused after all: the rest through the page cache
            block, self.position = block[done:], self.position + done
        if block:
            self.out.seek(self.position)
            _write_all(self.out, block)
            self.position += len(block)

    def close(self) -> None:
        if self.direct is not None:
            os.close(self.direct)
            self.direct = None


def _write_all(out: Any, block: memoryview) -> None:
    """Write all of ``block`` to an unbuffered file (a write may take only part of it)."""
    while block:
        block = block[out.write(block):]


def _has_content(target: Path, file: FileEntry) -> bool:
    """Whether ``target`` already holds exactly the file's bytes."""
    try:
        if not target.is_file() or target.stat().st_size != file.size:
            return False
        return hash_file(target)[1].hexdigest() == file.sha256
    except OSError:
        return False
