"""The built-in blob store: files in a local directory.

Registered as a plugin like any other (entry point ``storage-local`` in the ``modelreg``
group) and written against :mod:`modelreg.api` only.  Select it with
``modelreg.storage = local`` (the default).

Settings:

``modelreg.storage.local.path`` (required)
    the directory that holds everything; created if missing.  ``development.ini`` uses
    ``%(here)s/var/blobs``.

Local storage serves one machine, or several that mount the same directory from a
filesystem with atomic renames (NFS, SMB, CephFS...).  Several processes may share it: there
are no locks, since every write goes to a private temporary file that is renamed into place
only once complete, and two writers of one digest write the same bytes.

Layout under the root::

    blobs/sha256/ab/cd/abcd...   each blob, named by its digest
    uploads/<id>                 the data of a resumable upload so far
    uploads/<id>.parts/<n>-<sha> part ``n`` of an upload, named by its digest too
    tmp/put-*                    a blob being written by ``put``

A new blob's digest is known only once all of it has been read, so ``put`` writes to
``tmp/`` and renames from there; ``tmp/``, ``uploads/`` and ``blobs/`` must be on one
filesystem (checked at start-up) so that :func:`os.replace` is an atomic rename.  Files are
flushed with ``fsync`` before the rename and their directory afterwards (where the OS
allows), so that a crash leaves either the whole blob or none of it.  A crash can leave
files in ``tmp/``; they are never listed as blobs, and anything there older than a day is
garbage.

Every path is derived from a validated digest or a generated upload id, resolved
(following symlinks), and refused if it leaves its area of the root: a symlink planted inside
the root cannot make the store read or write elsewhere.  The root itself may be a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import io
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from zope.interface import implementer

from ..api import (
    MAX_PARTS,
    BackendDescription,
    BlobInfo,
    BlobNotFound,
    BlobTooLarge,
    DigestMismatch,
    IBlobStore,
    StorageError,
    StorageFull,
    UploadNotFound,
    hookimpl,
    validate_sha256,
)
from ..settings import STORAGE_LOCAL_PATH

#: The setting that names the root directory.
PATH_SETTING = STORAGE_LOCAL_PATH
#: Bytes read from a stream or a file at a time.
CHUNK_SIZE = 1024 * 1024

_FULL = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code)
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_HEX2 = re.compile(r"[0-9a-f]{2}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_PART_NAME = re.compile(r"([1-9][0-9]{0,4})-([0-9a-f]{64})")


@contextlib.contextmanager
def _fs_errors(action: str) -> Iterator[None]:
    """Turn an :class:`OSError` of the filesystem into :class:`StorageFull` or
    :class:`StorageError`, keeping the cause chained."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL:
            raise StorageFull(f"local storage is full while {action}") from exc
        raise StorageError(f"local storage failed while {action}: {exc.strerror or exc}") from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (not possible, nor needed, on Windows)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems cannot sync a directory
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _unlink_quietly(path: str | Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class _FileRange(io.RawIOBase):
    """The bytes ``[start, end)`` of an open file, as a readable, seekable stream.

    Positions are relative to ``start`` and ``SEEK_END`` is ``end``, so that a WSGI server's
    file wrapper that measures the stream by seeking sees exactly the range.
    """

    def __init__(self, file: BinaryIO, start: int, end: int) -> None:
        super().__init__()
        self._file = file
        self._start = start
        self._end = end
        self._pos = start
        file.seek(start)

    @property
    def name(self) -> str:
        return self._file.name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        wanted = min(len(buffer), self._end - self._pos)
        if wanted <= 0:
            return 0
        got = self._file.readinto(memoryview(buffer)[:wanted]) or 0
        self._pos += got
        return got

    def read(self, size: int | None = -1) -> bytes:
        self._checkClosed()
        remaining = max(self._end - self._pos, 0)
        wanted = remaining if size is None or size < 0 else min(size, remaining)
        data = self._file.read(wanted) if wanted else b""
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            position = self._start + offset
        elif whence == io.SEEK_CUR:
            position = self._pos + offset
        elif whence == io.SEEK_END:
            position = self._end + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if position < self._start:
            raise ValueError("negative seek position")
        self._file.seek(position)
        self._pos = position
        return position - self._start

    def tell(self) -> int:
        self._checkClosed()
        return self._pos - self._start

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


@implementer(IBlobStore)
class LocalBlobStore:
    """Blobs as files under ``root``; see the module's documentation for the layout.

    :param root: the directory; created (with its parents) if missing.
    :raises StorageError: if the root cannot be created or its areas are not all on one
        filesystem.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        with _fs_errors("creating the storage directories"):
            Path(root).mkdir(parents=True, exist_ok=True)
            self.root = Path(root).resolve(strict=True)
            for area in ("blobs/sha256", "uploads", "tmp"):
                self._contained(self.root / area, self.root).mkdir(parents=True, exist_ok=True)
        self._blobs = self._contained(self.root / "blobs" / "sha256", self.root)
        self._uploads = self._contained(self.root / "uploads", self.root)
        self._tmp = self._contained(self.root / "tmp", self.root)
        with _fs_errors("checking the storage directories"):
            devices = {os.stat(area).st_dev for area in (self._blobs, self._uploads, self._tmp)}
        if len(devices) != 1:
            raise StorageError(
                f"{self.root}: blobs/, uploads/ and tmp/ must be on one filesystem "
                f"(files are moved between them by renaming)"
            )

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    # ------------------------------------------------------------------------- paths

    @staticmethod
    def _contained(path: Path, area: Path) -> Path:
        """``path`` with every symlink resolved, if that stays inside ``area``."""
        resolved = Path(os.path.realpath(path))
        if resolved != area and not resolved.is_relative_to(area):
            raise StorageError(f"refusing {path}: it resolves outside {area}")
        return resolved

    def _blob_path(self, sha256: str) -> Path:
        validate_sha256(sha256)
        return self._contained(self._blobs / sha256[:2] / sha256[2:4] / sha256, self._blobs)

    def _upload_path(self, state: Any) -> Path:
        upload_id = state.get("id") if isinstance(state, dict) else None
        if not isinstance(upload_id, str) or not _UPLOAD_ID.fullmatch(upload_id):
            raise ValueError(f"not an upload state of the local storage backend: {state!r}")
        return self._contained(self._uploads / upload_id, self._uploads)

    # ------------------------------------------------------------------------- writing

    def _install(self, source: Path | str, sha256: str, size: int) -> None:
        """Move the complete, verified file ``source`` to the content address of ``sha256``.

        If the blob is already there, ``source`` is deleted instead (dedupe).
        """
        target = self._blob_path(sha256)
        with _fs_errors("storing a blob"):
            # Containment is checked before mkdir (so that a planted symlink cannot make us
            # create directories elsewhere) and again after it.
            self._contained(target.parent, self._blobs).mkdir(parents=True, exist_ok=True)
            target = self._blob_path(sha256)
            if self._has(target, size):
                os.unlink(source)
                return
            try:
                os.replace(source, target)
            except PermissionError:
                # Windows refuses to replace a file that a reader holds open; if a concurrent
                # put of the same content won the race, that is the dedupe case.
                if not self._has(target, size):
                    raise
                os.unlink(source)
                return
            _fsync_dir(target.parent)

    @staticmethod
    def _has(path: Path, size: int) -> bool:
        try:
            return os.stat(path).st_size == size
        except FileNotFoundError:
            return False

    def put(
        self, stream: BinaryIO, *, expected_sha256: str | None = None,
        max_size: int | None = None,
    ) -> BlobInfo:
        if expected_sha256 is not None:
            validate_sha256(expected_sha256)
        with _fs_errors("creating a temporary file"):
            fd, tmp = tempfile.mkstemp(prefix="put-", dir=self._contained(self._tmp, self.root))
        try:
            digest = hashlib.sha256()
            size = 0
            try:
                while True:
                    # Never read more than one byte past max_size: the rest is not wanted.
                    wanted = CHUNK_SIZE if max_size is None else min(CHUNK_SIZE,
                                                                     max_size - size + 1)
                    chunk = stream.read(wanted)
                    if not chunk:
                        break
                    size += len(chunk)
                    if max_size is not None and size > max_size:
                        raise BlobTooLarge(max_size)
                    digest.update(chunk)
                    with _fs_errors("writing a blob"):
                        _write_all(fd, chunk)
                with _fs_errors("writing a blob"):
                    os.fsync(fd)
            finally:
                with _fs_errors("writing a blob"):
                    os.close(fd)
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and not hmac.compare_digest(sha256, expected_sha256):
                raise DigestMismatch(expected_sha256, sha256)
            self._install(tmp, sha256, size)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return BlobInfo(sha256, size)

    def delete(self, sha256: str) -> bool:
        path = self._blob_path(sha256)
        with _fs_errors("deleting a blob"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
        return True

    # ------------------------------------------------------------------------- reading

    def exists(self, sha256: str) -> bool:
        path = self._blob_path(sha256)
        with _fs_errors("looking up a blob"):
            return path.is_file()

    def stat(self, sha256: str) -> BlobInfo:
        path = self._blob_path(sha256)
        with _fs_errors("looking up a blob"):
            try:
                size = os.stat(path).st_size
            except (FileNotFoundError, NotADirectoryError):
                raise BlobNotFound(sha256) from None
        return BlobInfo(sha256, size)

    def open(self, sha256: str, start: int = 0, end: int | None = None) -> BinaryIO:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid byte range [{start}, {end})")
        path = self._blob_path(sha256)
        with _fs_errors("opening a blob"):
            try:
                file = open(path, "rb")
            except (FileNotFoundError, NotADirectoryError):
                raise BlobNotFound(sha256) from None
            try:
                size = os.fstat(file.fileno()).st_size
                if start > size:
                    raise ValueError(f"range start {start} is past the end ({size} bytes)")
                return _FileRange(file, start, size if end is None else min(end, size))
            except BaseException:
                file.close()
                raise

    def iter_digests(self) -> Iterator[str]:
        for first in self._subdirs(self._blobs):
            for second in self._subdirs(self._blobs / first):
                with _fs_errors("listing blobs"):
                    with os.scandir(self._blobs / first / second) as entries:
                        names = [entry.name for entry in entries
                                 if entry.is_file(follow_symlinks=False)]
                for name in sorted(names):
                    if _DIGEST.fullmatch(name) and name[:2] == first and name[2:4] == second:
                        yield name

    @staticmethod
    def _subdirs(path: Path) -> list[str]:
        with _fs_errors("listing blobs"), os.scandir(path) as entries:
            return sorted(entry.name for entry in entries
                          if _HEX2.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False))

    def check(self) -> None:
        for area, parent in ((self._blobs, self.root), (self._uploads, self.root),
                             (self._tmp, self.root)):
            self._contained(area, parent)
            if not area.is_dir():
                raise StorageError(f"local storage directory {area} is missing")
        with _fs_errors("checking that the storage is writable"):
            fd, name = tempfile.mkstemp(prefix="check-", dir=self._tmp)
            try:
                _write_all(fd, b"ok")
            finally:
                os.close(fd)
                os.unlink(name)

    def download_url(self, sha256: str, *, filename: str, expires: int | None = None) -> None:
        validate_sha256(sha256)
        return None

    def file_path(self, sha256: str) -> str:
        return str(self._blob_path(sha256))

    # ------------------------------------------------------------------------- uploads

    def begin_upload(self) -> dict[str, Any]:
        upload_id = secrets.token_hex(16)
        path = self._upload_path({"id": upload_id})
        with _fs_errors("starting an upload"):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o600))
        return {"id": upload_id, "offset": 0}

    def abort_upload(self, state: dict[str, Any]) -> None:
        path = self._upload_path(state)
        with _fs_errors("aborting an upload"), contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._remove_parts(state)

    # ------------------------------------------------------------------- numbered parts

    def _parts_dir(self, state: Any) -> Path:
        path = self._upload_path(state)
        return self._contained(path.with_name(path.name + ".parts"), self._uploads)

    def _part_path(self, state: Any, number: Any, sha256: Any) -> Path:
        if not isinstance(number, int) or not 1 <= number <= MAX_PARTS:
            raise ValueError(f"a part number is 1 to {MAX_PARTS}, not {number!r}")
        validate_sha256(sha256)
        directory = self._parts_dir(state)
        return self._contained(directory / f"{number}-{sha256}", directory)

    def _remove_parts(self, state: Any) -> None:
        directory = self._parts_dir(state)
        with _fs_errors("freeing the parts of an upload"), \
                contextlib.suppress(FileNotFoundError):
            shutil.rmtree(directory)

    def upload_part(
        self, state: dict[str, Any], *, number: int, stream: BinaryIO, length: int,
        expected_sha256: str | None = None,
    ) -> dict[str, Any]:
        if expected_sha256 is not None:
            validate_sha256(expected_sha256)
        self._part_path(state, number, "0" * 64)  # validates the number and the state
        if length < 0:
            raise ValueError(f"negative part length {length}")
        if not self._upload_path(state).exists():
            raise UploadNotFound("the upload was aborted, completed or cleaned up")
        with _fs_errors("receiving a part"):
            self._parts_dir(state).mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix="part-", dir=self._contained(self._tmp, self.root))
        try:
            digest = hashlib.sha256()
            remaining = length
            try:
                while remaining:
                    piece = stream.read(min(CHUNK_SIZE, remaining))
                    if not piece:
                        raise ValueError(f"the part ended after {length - remaining} of its "
                                         f"{length} bytes")
                    if len(piece) > min(CHUNK_SIZE, remaining):
                        raise ValueError("the stream returned more bytes than asked for")
                    remaining -= len(piece)
                    digest.update(piece)
                    with _fs_errors("receiving a part"):
                        _write_all(fd, piece)
                with _fs_errors("receiving a part"):
                    os.fsync(fd)
            finally:
                with _fs_errors("receiving a part"):
                    os.close(fd)
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and not hmac.compare_digest(sha256, expected_sha256):
                raise DigestMismatch(expected_sha256, sha256)
            target = self._part_path(state, number, sha256)
            with _fs_errors("receiving a part"):
                if not self._upload_path(state).exists():  # aborted meanwhile
                    raise UploadNotFound("the upload was aborted, completed or cleaned up")
                os.replace(tmp, target)
        except BaseException:
            _unlink_quietly(tmp)
            if not self._upload_path(state).exists():  # aborted meanwhile: no empty folder
                self._remove_parts(state)
            raise
        return {"number": number, "size": length, "sha256": sha256}

    def delete_part(self, state: dict[str, Any], part: dict[str, Any]) -> None:
        path = self._part_path(state, part.get("number"), part.get("sha256"))
        _unlink_quietly(path)

    def complete_parts(
        self, state: dict[str, Any], parts: list[dict[str, Any]], *, expected_sha256: str
    ) -> BlobInfo:
        validate_sha256(expected_sha256)
        if not self._upload_path(state).exists():
            raise UploadNotFound("the upload was aborted, completed or cleaned up")
        paths = [self._part_path(state, part.get("number"), part.get("sha256"))
                 for part in parts]
        with _fs_errors("completing an upload"):
            fd, tmp = tempfile.mkstemp(prefix="put-", dir=self._contained(self._tmp, self.root))
        try:
            digest = hashlib.sha256()
            size = 0
            try:
                for path in paths:
                    with _fs_errors("completing an upload"):
                        try:
                            part = open(path, "rb")
                        except FileNotFoundError:
                            raise UploadNotFound(f"part {path.name} of the upload is gone") \
                                from None
                        with part:
                            while block := part.read(CHUNK_SIZE):
                                digest.update(block)
                                size += len(block)
                                _write_all(fd, block)
                with _fs_errors("completing an upload"):
                    os.fsync(fd)
            finally:
                with _fs_errors("completing an upload"):
                    os.close(fd)
            sha256 = digest.hexdigest()
            if not hmac.compare_digest(sha256, expected_sha256):
                raise DigestMismatch(expected_sha256, sha256)  # the parts stay
            self._install(tmp, sha256, size)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        self.abort_upload(state)
        return BlobInfo(sha256, size)


def create_store(settings: dict[str, Any]) -> LocalBlobStore:
    """The backend's factory: a :class:`LocalBlobStore` at ``modelreg.storage.local.path``.

    :raises RuntimeError: if the setting is missing.
    """
    path = (settings.get(PATH_SETTING) or "").strip()
    if not path:
        raise RuntimeError(
            f"{PATH_SETTING} is not set: name the directory where the local storage backend "
            f"keeps blobs (development.ini uses %(here)s/var/blobs)"
        )
    return LocalBlobStore(path)


@hookimpl
def modelreg_storage_backends() -> list[BackendDescription]:
    """Offer the ``local`` backend."""
    return [BackendDescription(
        "local", create_store,
        "files in a local directory (one machine, or a filesystem shared by several)",
    )]
