"""The local cache of pulled files, shared by every pull on a machine (like the Hugging Face
Hub's): each file is downloaded once, whatever the version or the destination it goes to.

Layout under the cache root (:func:`modelreg_client.config.cache_dir`), one directory per
server::

    <root>/<host>_<port>-<hash of the URL>/
        blobs/<ab>/<sha256>              the bytes, named by their sha256 (verified)
        blobs/<ab>/<sha256>.part         a download in progress (resumed with Range)
        locks/<sha256>.lock              held while a blob is downloaded, linked or pruned
        models/<model>/manifests/<N>.json     the version's file list (path, size, sha256 …)
        models/<model>/versions/<N>/…         the version's files: links to the blobs
        models/<model>/refs/<ref>.json        what an alias / latest / digest last resolved to

A version's tree holds symbolic links to the blobs; where the system refuses them (Windows
without developer mode, some network filesystems) hard links, and where those fail too,
copies: :meth:`Cache.link_mode` finds out once per cache and never fails.

Concurrent pulls, in threads or processes, of the same or overlapping versions are safe: a
blob is downloaded under its lock file (:mod:`filelock`, portable), to a temporary name,
verified, then renamed into place, and a pull that finds the blob there takes it as is; tree
entries and JSON records are written under temporary names and renamed.  :meth:`Cache.prune`
takes the same locks before it removes a blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pathspec
from filelock import FileLock

from .errors import NotCached, NotFound
from .manifest import hash_file
from .types import FileEntry, FileList, _Result

__all__ = ["LINK_MODES", "Cache", "CachedVersion", "PathFilter", "PruneResult"]

#: How a version's tree refers to blobs, in the order tried.
LINK_MODES = ("symlink", "hardlink", "copy")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def server_key(url: str) -> str:
    """The directory name of a server's part of the cache: readable, and unique per URL."""
    parts = urlsplit(url.rstrip("/"))
    host = re.sub(r"[^A-Za-z0-9.-]", "_", parts.hostname or "server")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    digest = hashlib.sha256(url.rstrip("/").encode("utf-8")).hexdigest()[:8]
    return f"{host}_{port}-{digest}"


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` atomically (a temporary name, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class PathFilter:
    """Which files of a version a pull takes: ``paths`` (files, or folders with everything
    under them), then ``include`` and ``exclude`` patterns in gitignore syntax, like push's
    (:class:`~modelreg_client.manifest.IgnoreRules`) and the Hub's ``allow_patterns`` /
    ``ignore_patterns``."""

    def __init__(self, *, include: Iterable[str] = (), exclude: Iterable[str] = (),
                 paths: Iterable[str] = ()) -> None:
        include, exclude = list(include), list(exclude)
        self.include = pathspec.GitIgnoreSpec.from_lines(include) if include else None
        self.exclude = pathspec.GitIgnoreSpec.from_lines(exclude) if exclude else None
        self.paths = [p.strip("/") for p in paths if p.strip("/")]

    @property
    def everything(self) -> bool:
        """Whether the filter keeps every file."""
        return self.include is None and self.exclude is None and not self.paths

    def select(self, listing: FileList) -> list[FileEntry]:
        """The files of ``listing`` the filter keeps.

        :raises NotFound: a path names no file or folder of the version.
        """
        files = listing.files
        if self.paths:
            for wanted in self.paths:
                if not any(_under(f.path, wanted) for f in files):
                    raise NotFound(
                        f"{listing.model}/{listing.version} has no file or folder {wanted!r}",
                        code="file_not_found", details={"path": wanted})
            files = [f for f in files if any(_under(f.path, p) for p in self.paths)]
        if self.include is not None:
            files = [f for f in files if self.include.match_file(f.path)]
        if self.exclude is not None:
            files = [f for f in files if not self.exclude.match_file(f.path)]
        return files


def _under(path: str, wanted: str) -> bool:
    return path == wanted or path.startswith(wanted + "/")


@dataclass(frozen=True)
class CachedVersion(_Result):
    """A version in the cache: where its tree is, the refs that last resolved to it, and how
    many of its files (and bytes) the tree holds."""

    server: str
    model: str
    version: int
    digest: str | None
    path: str
    refs: list[str]
    files: int
    total_files: int
    size: int


@dataclass(frozen=True)
class PruneResult(_Result):
    """What :meth:`Cache.prune` removed: blobs (and their bytes), and versions with
    ``everything``."""

    removed_blobs: list[str]
    freed_bytes: int
    removed_versions: list[str]


class Cache:
    """The part of the cache that belongs to the server at ``url`` (see the module's
    documentation)."""

    #: The link mode found for each cache root, shared by the threads of a process.
    _modes: dict[str, str] = {}

    def __init__(self, root: str | Path, url: str) -> None:
        self.root = Path(root).expanduser()
        self.url = url.rstrip("/")
        self.directory = self.root / server_key(self.url)

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r}, {self.url!r})"

    def _at(self, server: Path) -> Cache:
        """The cache of another server's directory under the same root."""
        other = Cache(self.root, self.url)
        other.directory = server
        return other

    # -------------------------------------------------------------------- places

    def blob(self, sha256: str) -> Path:
        """Where the blob ``sha256`` is (or will be)."""
        return self.directory / "blobs" / sha256[:2] / sha256

    def lock(self, sha256: str) -> FileLock:
        """The lock of the blob ``sha256`` (a lock file, held by one thread or process)."""
        path = self.directory / "locks" / f"{sha256}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path), thread_local=False)

    def tree(self, model: str, number: int) -> Path:
        """The directory of a cached version's files."""
        return self.directory / "models" / model / "versions" / str(number)

    def _manifest(self, model: str, number: int) -> Path:
        return self.directory / "models" / model / "manifests" / f"{number}.json"

    def _ref(self, model: str, ref: str) -> Path:
        # Aliases are slugs; "sha256:…" needs its colon quoted for Windows.
        return self.directory / "models" / model / "refs" / (quote(ref, safe="") + ".json")

    # ---------------------------------------------------------------- resolution

    def remember(self, listing: FileList, ref: str | None, etag: str | None = None) -> None:
        """Record a version's file list, and that ``ref`` (an alias, ``latest``, a digest;
        ``None`` or a number records nothing) resolved to it now, with the server's ``ETag``
        of that answer (:meth:`validator`)."""
        manifest = self._manifest(listing.model, listing.version)
        record = {"model": listing.model, "version": listing.version, "digest": listing.digest,
                  "files": [f.as_dict() for f in listing.files]}
        if _read_json(manifest) != record:
            _write_json(manifest, record)
        if ref is not None and not ref.isdigit():
            record = {"version": listing.version, "digest": listing.digest,
                      "resolved_at": time.time()}
            if etag:
                record["etag"] = etag
            _write_json(self._ref(listing.model, ref), record)

    def validator(self, model: str, ref: str) -> str | None:
        """The ``ETag`` of the server's answer ``ref`` last resolved from (an alias,
        ``latest``, a digest), to ask with ``If-None-Match`` whether it still holds; ``None``
        when none was recorded."""
        if ref.isdigit():
            return None
        record = _read_json(self._ref(model, ref))
        etag = record.get("etag") if isinstance(record, dict) else None
        return etag if isinstance(etag, str) else None

    def lookup(self, model: str, ref: str) -> FileList:
        """What ``ref`` of ``model`` last resolved to, from the cache alone.

        :raises NotCached: the cache never resolved that ref, or lacks the version's list.
        """
        if ref.isdigit():
            number = int(ref)
        else:
            record = _read_json(self._ref(model, ref))
            if not isinstance(record, dict) or not isinstance(record.get("version"), int):
                raise NotCached(f"{model}@{ref} was never pulled into the cache at "
                                f"{self.root}: it cannot be resolved offline",
                                details={"ref": f"{model}@{ref}"})
            number = record["version"]
        data = _read_json(self._manifest(model, number))
        if not isinstance(data, dict):
            raise NotCached(f"{model}/{number} is not in the cache at {self.root}",
                            details={"ref": f"{model}/{number}"})
        return FileList(model, number, data.get("digest"),
                        [FileEntry.from_json(f) for f in data["files"]])

    # --------------------------------------------------------------------- links

    def link_mode(self) -> str:
        """How this cache's trees refer to blobs: ``symlink``, else ``hardlink``, else
        ``copy`` — the first the filesystem and the user's privileges allow (tried once,
        in a scratch folder of the cache)."""
        key = str(self.root)
        mode = self._modes.get(key)
        if mode is not None:
            return mode
        scratch = self.directory / "tmp" / uuid.uuid4().hex
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            source = scratch / "source"
            source.write_bytes(b"x")
            mode = "copy"
            for candidate in LINK_MODES[:2]:
                try:
                    _make(candidate, source, scratch / candidate)
                    if (scratch / candidate).read_bytes() == b"x":
                        mode = candidate
                        break
                except (OSError, NotImplementedError):
                    continue
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self._modes[key] = mode
        return mode

    def holds(self, target: Path, file: FileEntry) -> bool:
        """Whether the tree entry ``target`` gives exactly the bytes of ``file``."""
        blob = self.blob(file.sha256)
        try:
            if target.is_symlink():
                return target.resolve() == blob.resolve() and blob.is_file()
            if not target.is_file() or target.stat().st_size != file.size:
                return False
            if blob.exists() and os.path.samefile(target, blob):
                return True
            return hash_file(target)[1].hexdigest() == file.sha256  # a copy
        except OSError:
            return False

    def place(self, file: FileEntry, target: Path) -> None:
        """Make ``target`` refer to the (present, verified) blob of ``file``: a link, or a
        copy where links are refused (the mode falls back and is remembered)."""
        blob = self.blob(file.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        mode = self.link_mode()
        while True:
            try:
                _make(mode, blob, temporary)
                break
            except (OSError, NotImplementedError):
                if mode == "copy":
                    raise
                # Links refused here after all (another filesystem under the root?).
                mode = LINK_MODES[LINK_MODES.index(mode) + 1]
                self._modes[str(self.root)] = mode
        try:
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    # ----------------------------------------------------------------- listings

    def versions(self, *, every_server: bool = False) -> list[CachedVersion]:
        """The cached versions of this server (of every server under the root with
        ``every_server``), sorted by server, model and number."""
        found = []
        servers = sorted(p for p in self.root.iterdir() if p.is_dir()) \
            if every_server and self.root.is_dir() else [self.directory]
        for server in servers:
            for manifest in sorted((server / "models").glob("*/manifests/*.json")):
                model = manifest.parent.parent.name
                data = _read_json(manifest)
                tree = server / "models" / model / "versions" / manifest.stem
                if not isinstance(data, dict) or not tree.is_dir():
                    continue
                refs = []
                for ref in sorted((server / "models" / model / "refs").glob("*.json")):
                    record = _read_json(ref)
                    if isinstance(record, dict) and record.get("version") == data["version"]:
                        refs.append(unquote(ref.stem))
                present = [f for f in data["files"]
                           if (tree / f["path"]).is_file()]
                found.append(CachedVersion(
                    server.name, model, data["version"], data.get("digest"), str(tree), refs,
                    len(present), len(data["files"]), sum(f["size"] for f in present)))
        return sorted(found, key=lambda v: (v.server, v.model, v.version))

    def forget(self, model: str, number: int) -> bool:
        """Remove a version's tree, its file list and the refs resolved to it (its blobs
        stay until :meth:`prune`); whether it was cached."""
        tree, manifest = self.tree(model, number), self._manifest(model, number)
        existed = tree.exists() or manifest.exists()
        for ref in (self.directory / "models" / model / "refs").glob("*.json"):
            record = _read_json(ref)
            if isinstance(record, dict) and record.get("version") == number:
                ref.unlink(missing_ok=True)
        manifest.unlink(missing_ok=True)
        shutil.rmtree(tree, ignore_errors=True)
        return existed

    # ------------------------------------------------------------------- pruning

    def _referenced(self, server: Path) -> set[str]:
        """The blobs a cached version's tree refers to."""
        referenced: set[str] = set()
        for manifest in (server / "models").glob("*/manifests/*.json"):
            data = _read_json(manifest)
            tree = manifest.parent.parent / "versions" / manifest.stem
            if not isinstance(data, dict) or not tree.is_dir():
                continue
            for f in data["files"]:
                entry = tree / f["path"]
                if entry.is_symlink() or entry.exists():
                    referenced.add(f["sha256"])
        return referenced

    def prune(self, *, everything: bool = False, every_server: bool = False) -> PruneResult:
        """Remove the blobs no cached version refers to; with ``everything``, every cached
        version first (so every blob) and what interrupted downloads left behind.  Blobs are removed
        under their lock, after checking again that no pull has linked them meanwhile."""
        removed: list[str] = []
        versions: list[str] = []
        freed = 0
        servers = sorted(p for p in self.root.iterdir() if p.is_dir()) \
            if every_server and self.root.is_dir() else [self.directory]
        for server in servers:
            cache = self._at(server)
            if everything:
                for version in cache.versions():
                    cache.forget(version.model, version.version)
                    versions.append(f"{version.model}/{version.version}")
            if everything:  # scratch folders of link probes (a running pull may own one)
                shutil.rmtree(server / "tmp", ignore_errors=True)
            referenced = cache._referenced(server)
            candidates = sorted(
                (p.name, p) for p in (server / "blobs").glob("*/*")
                if _SHA256.match(p.name.removesuffix(".part"))
                and p.name.removesuffix(".part") not in referenced
                and (everything or not p.name.endswith(".part")))
            # Every candidate's lock (pulls hold one lock at a time: no deadlock), then a
            # second look: a pull may have linked one of them since the first.
            with contextlib.ExitStack() as locks:
                for sha256 in sorted({name.removesuffix(".part") for name, _ in candidates}):
                    locks.enter_context(cache.lock(sha256))
                referenced = cache._referenced(server)
                for name, path in candidates:
                    if name.removesuffix(".part") in referenced:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        size = path.stat().st_size
                        path.unlink()
                        freed += size
                        if not name.endswith(".part"):
                            removed.append(name)
        return PruneResult(sorted(removed), freed, versions)


def _make(mode: str, source: Path, target: Path) -> None:
    """Create ``target`` as a ``mode`` (:data:`LINK_MODES`) of ``source``."""
    if mode == "symlink":
        os.symlink(os.path.relpath(source, target.parent), target)
    elif mode == "hardlink":
        os.link(source, target)
    else:
        shutil.copyfile(source, target)
