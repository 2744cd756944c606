"""The built-in blob store: files in a local directory.

Registered as a plugin like any other (entry point ``storage-local`` in the ``modelreg``
group) and written against :mod:`modelreg.api` only.  Select it with
``modelreg.storage = local`` (the default).

Settings:

``modelreg.storage.local.path`` (required)
    the directory that holds everything; created if missing.  ``development.ini`` uses
    ``%(here)s/var/blobs``.
``modelreg.storage.local.direct_writes`` (default ``true``)
    write the parts of uploads with ``O_DIRECT`` (where the filesystem supports it): no
    copy through the page cache.  ``false`` writes them through the page cache, which keeps
    a freshly uploaded file in memory for the next read.

Local storage serves one machine, or several that mount the same directory from a
filesystem with atomic renames (NFS, SMB, CephFS...).  Several processes may share it: there
are no locks, since every write goes to a private temporary file that is renamed into place
only once complete, and two writers of one digest write the same bytes.

Layout under the root::

    blobs/sha256/ab/cd/abcd...   each blob, named by its digest
    uploads/<id>                 an upload's data file: its parts, each at its offset
    uploads/<id>.parts/n.in      part ``n`` is in the data file (a symlink to
                                 ``<offset>-<size>-<sha256>``)
    uploads/<id>.parts/n.lock    the region of part ``n`` is being written or read
    uploads/<id>.parts/<n>-<sha> part ``n`` as a file of its own (when its region was not
                                 free, or its offset not given)
    tmp/put-*                    a blob being written by ``put``

Parts of an upload are written in place, into the upload's data file at their offsets (with
``O_DIRECT`` for whole blocks where the filesystem allows, unless
``modelreg.storage.local.direct_writes = false``), and flushed (``fdatasync``) before they
are acknowledged; completion renames the data file to the blob's address, without a copy,
once its sha256 is verified.  The sha256 follows the parts as they land in this process;
completion reads from the file only what it missed (everything, in another process).  See
"numbered parts" in the class for the rules that keep this right with several writers.

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
import mmap
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
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
from ..settings import STORAGE_LOCAL_DIRECT_WRITES, STORAGE_LOCAL_PATH

#: The setting that names the root directory.
PATH_SETTING = STORAGE_LOCAL_PATH
#: The setting that switches direct writes of upload parts off (``false``).
DIRECT_WRITES_SETTING = STORAGE_LOCAL_DIRECT_WRITES
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


_O_DIRECT = getattr(os, "O_DIRECT", 0)
#: The alignment of direct writes (offsets, lengths and buffers).
_ALIGN = 4096
#: Whether parts can be written in place (``os.pwrite`` and symbolic links as records).
_IN_PLACE = os.name == "posix" and hasattr(os, "pwrite")
#: The record that a completion is under way (see ``LocalBlobStore``'s numbered parts).
_COMPLETING = "completing"
#: Uploads whose running hash one process keeps at most (the oldest are forgotten).
_MAX_RUNNING = 256
#: Bytes of a spooled body mapped at once (see ``_copy_in``): a whole number of blocks.
_MAP_WINDOW = 2 * CHUNK_SIZE
#: Spools of out-of-order parts one upload keeps open at most (see ``_Spool``).
_MAX_SPOOLS = 32


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _copy_in(stream: BinaryIO, length: int, write: Callable[[memoryview, int], None],
             offset: int, also: Any) -> Any:
    """Read exactly ``length`` bytes of ``stream`` into one reused, page-aligned buffer
    (``readinto`` where the stream has it: no allocation per block), hash them (and feed
    them to ``also``, a second digest, if given) and ``write(block, offset)`` each block.
    Every block but the last fills the buffer, so that blocks stay aligned for
    :class:`_DataWriter`'s direct writes.  A stream that can map its bytes (``mapped``:
    the spool Waitress wrote the body to, see :mod:`modelreg.files.body`) is not read at
    all: its blocks are hashed and written from the mapping (page-aligned too), one window
    of :data:`_MAP_WINDOW` bytes at a time.

    :returns: the sha256 of the bytes.
    :raises ValueError: if the stream ends early or returns more than asked for.
    """
    digest = hashlib.sha256()
    mapped = getattr(stream, "mapped", None)
    remaining = length
    # The spool, mapped a window at a time (what is mapped counts in the process's RSS):
    # hashed and written from the page cache; what a window cannot map is read below.
    while remaining and callable(mapped):
        window = mapped(min(_MAP_WINDOW, remaining))
        if window is None:
            break
        mapped_bytes = len(window)
        try:
            for start in range(0, mapped_bytes, CHUNK_SIZE):
                with window[start:start + CHUNK_SIZE] as block:
                    digest.update(block)
                    if also is not None:
                        also.update(block)
                    with _fs_errors("receiving a part"):
                        write(block, offset + start)
        finally:
            window.release()
        offset += mapped_bytes
        remaining -= mapped_bytes
    if not remaining:
        return digest
    size = min(CHUNK_SIZE, max(remaining, 1))
    # Anonymous memory is page-aligned, as direct writes need; freed with its last view.
    buffer = memoryview(mmap.mmap(-1, size))
    readinto = getattr(stream, "readinto", None)
    while remaining:
        wanted = min(size, remaining)
        got = 0
        while got < wanted:
            if readinto is not None:
                n = readinto(buffer[got:wanted]) or 0
            else:
                piece = stream.read(wanted - got)
                if len(piece) > wanted - got:
                    raise ValueError("the stream returned more bytes than asked for")
                n = len(piece)
                buffer[got:got + n] = piece
            if not n:
                raise ValueError(f"the part ended after {length - remaining + got} "
                                 f"of its {length} bytes")
            got += n
        block = buffer[:got]
        remaining -= got
        digest.update(block)
        if also is not None:
            also.update(block)
        with _fs_errors("receiving a part"):
            write(block, offset)
        offset += got
    return digest


class _DataWriter:
    """Writes blocks at their offsets of an upload's data file: whole blocks of
    :data:`_ALIGN` bytes at aligned offsets with ``O_DIRECT`` where the filesystem allows
    it (straight from the buffer to the disk: no copy into the page cache, which costs
    more than the disk write on a virtual machine), the rest through the page cache."""

    def __init__(self, path: Path, direct: bool) -> None:
        self.fd = os.open(path, os.O_WRONLY | _O_BINARY)
        self.direct: int | None = None
        if _O_DIRECT and direct:
            try:
                self.direct = os.open(path, os.O_WRONLY | _O_DIRECT)
            except OSError:  # not on this filesystem (tmpfs…): through the page cache
                self.direct = None

    def write(self, view: memoryview, offset: int) -> None:
        if self.direct is not None and offset % _ALIGN == 0:
            whole = len(view) - len(view) % _ALIGN
            done = 0
            try:
                while done < whole:
                    written = os.pwrite(self.direct, view[done:whole], offset + done)
                    done += written
                    if written % _ALIGN:
                        break  # the rest goes through the page cache
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._no_direct()
            view, offset = view[done:], offset + done
        if view:
            _pwrite_all(self.fd, view, offset)

    def _no_direct(self) -> None:
        if self.direct is not None:
            os.close(self.direct)
            self.direct = None

    def sync(self) -> None:
        """Flush the data and what is needed to read it back (``fdatasync``)."""
        os.fdatasync(self.fd) if hasattr(os, "fdatasync") else os.fsync(self.fd)

    def close(self) -> None:
        self._no_direct()
        os.close(self.fd)


def _hash_region(file: Any, offset: int, length: int, digest: Any,
                 also: Callable[[memoryview], None] | None = None) -> int:
    """Feed ``length`` bytes of the unbuffered ``file`` from ``offset`` to ``digest`` (and
    to ``also``); return how many there were (fewer at the end of the file)."""
    buffer = memoryview(bytearray(min(CHUNK_SIZE, max(length, 1))))
    file.seek(offset)
    done = 0
    while done < length:
        got = file.readinto(buffer[:min(len(buffer), length - done)]) or 0
        if not got:
            break
        digest.update(buffer[:got])
        if also is not None:
            also(buffer[:got])
        done += got
    return done


def _region(offset: Any, size: Any, sha256: Any) -> str:
    """The target of part ``n``'s ``n.in`` record."""
    return f"{offset}-{size}-{sha256}"


def _read_region_record(directory: Path, part: dict[str, Any]) -> bool:
    """Whether ``n.in`` says that the data file holds exactly this part at its offset."""
    try:
        return os.readlink(directory / f"{part.get('number')}.in") == _region(
            part.get("offset"), part.get("size"), part.get("sha256"))
    except OSError:
        return False


class _RegionLock:
    """``n.lock``: the exclusive right to write (``"w"``) or read (``"r"``) the region of
    part ``n`` in the data file, across threads and processes (a symlink is created
    atomically or not at all)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def take(cls, directory: Path, number: int, mode: str) -> _RegionLock | None:
        """The lock, or ``None`` if someone holds it (or a crashed holder left it)."""
        if not _IN_PLACE:
            return None
        path = directory / f"{number}.lock"
        with _fs_errors("receiving a part"):
            try:
                os.symlink(mode, path)
            except FileExistsError:
                return None
        return cls(path)

    def release(self) -> None:
        _unlink_quietly(self.path)

    @staticmethod
    def writers(directory: Path) -> bool:
        """Whether any region is held for writing."""
        with _fs_errors("completing an upload"), os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(".lock"):
                    with contextlib.suppress(OSError):
                        if os.readlink(entry.path) != "r":
                            return True
        return False


class _Spool:
    """A duplicate descriptor of the file a part's body was spooled to (Waitress's
    temporary file), kept after the request so that the running hash can read the part's
    bytes from memory the page cache still holds, instead of from the data file on the
    disk.  The file is private to its request and never written again; its size and
    modification time are checked before use all the same."""

    #: Bytes of spools this process keeps at most, and seconds it keeps one at most:
    #: spools are only a shortcut, and an upload whose gap is never filled must not pin
    #: temporary space (they are the bodies' bytes, in TMPDIR).
    LIMIT = 1024 * 1024 * 1024
    MAX_AGE = 120.0
    _lock = threading.Lock()
    _held: dict[int, _Spool] = {}
    _bytes = 0

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd = os.dup(fd)
        self.offset = offset
        self.length = length
        self.closed = False
        self.since = time.monotonic()
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int]:
        st = os.fstat(self.fd)
        return st.st_size, st.st_mtime_ns

    @classmethod
    def of(cls, stream: Any, length: int) -> _Spool | None:
        """The spool under ``stream`` (one with a ``spooled()`` method, see
        :func:`modelreg.files.body.BodyReader.spooled`), before its ``length`` bytes are
        read, or ``None``."""
        spooled = getattr(stream, "spooled", None)
        now = time.monotonic()
        with cls._lock:
            for old in [s for s in cls._held.values() if now - s.since > cls.MAX_AGE]:
                old._release()
            if cls._bytes + length > cls.LIMIT:
                return None
            cls._bytes += length  # reserved
        spool = None
        try:
            where = spooled() if callable(spooled) else None
            if where is not None:
                spool = cls(where[0], where[1], length)
        except (OSError, ValueError, TypeError):
            spool = None
        with cls._lock:
            if spool is None:
                cls._bytes -= length
            else:
                cls._held[id(spool)] = spool
        return spool

    def hashed(self, digest: Any) -> Any:
        """A copy of ``digest`` fed the part's bytes, or ``None`` if the file changed or
        the spool was closed (for its age) meanwhile."""
        if self.closed or self._stat() != self._stamp:
            return None
        copy = digest.copy()
        buffer = memoryview(bytearray(min(CHUNK_SIZE, max(self.length, 1))))
        done = 0
        while done < self.length:
            got = os.preadv(self.fd, [buffer[:min(len(buffer), self.length - done)]],
                            self.offset + done)
            if not got:
                return None
            copy.update(buffer[:got])
            done += got
        with self._lock:  # not closed (its number not reused) while it was read
            return copy if not self.closed and self._stat() == self._stamp else None

    def _release(self) -> None:
        """Close (the class's lock held)."""
        if not self.closed:
            self.closed = True
            _Spool._bytes -= self.length
            _Spool._held.pop(id(self), None)
            with contextlib.suppress(OSError):
                os.close(self.fd)

    def close(self) -> None:
        with self._lock:
            self._release()


def _part_key(part: dict[str, Any]) -> tuple[Any, ...]:
    return (part.get("number"), part.get("offset"), part.get("size"), part.get("sha256"))


class _RunningHash:
    """The sha256 of an upload's data file from byte 0 to ``position``, advanced by the
    parts that land in this process: fed the bytes of the part that starts at
    ``position`` as they are written, or reading from the data file the parts that landed
    beyond it once the gap is filled.  ``consumed`` lists the parts hashed, in order:
    completion uses the digest only if they are the first of its parts, and reads the
    rest (or everything) from the file.  One thread at a time feeds or reads (``busy``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.digest: Any = hashlib.sha256()
        self.position = 0
        self.consumed: list[tuple[Any, ...]] = []
        self._landed: dict[int, dict[str, Any]] = {}
        #: For landed parts: a duplicate descriptor of the spool their bytes came from
        #: (see :meth:`keep_spool`), read instead of the data file.
        self._spools: dict[int, _Spool] = {}
        self._busy = False
        self._saved: Any = None

    def start_feeding(self, offset: int) -> bool:
        """Whether the caller, about to write a part at ``offset``, is to feed ``digest``."""
        with self._lock:
            if self._busy or offset != self.position:
                return False
            self._busy, self._saved = True, self.digest.copy()
            return True

    def stop_feeding(self, part: dict[str, Any] | None) -> None:
        """The fed part was stored (``part``) or failed (``None``: forget its bytes)."""
        with self._lock:
            if part is None:
                self.digest = self._saved
            else:
                self.position += part["size"]
                self.consumed.append(_part_key(part))
            self._busy, self._saved = False, None

    def landed(self, part: dict[str, Any], spool: _Spool | None = None) -> None:
        """A part was stored beyond ``position``: to be read once the gap is filled (from
        ``spool`` if given: this object closes it)."""
        with self._lock:
            offset = part["offset"]
            if offset >= self.position:
                self._landed[offset] = part
                self._close_spool(offset)
                if spool is not None:
                    if len(self._spools) < _MAX_SPOOLS:
                        self._spools[offset], spool = spool, None
            if spool is not None:
                spool.close()

    def forget(self, part: dict[str, Any]) -> None:
        with self._lock:
            if self._landed.get(part.get("offset")) == part:
                del self._landed[part["offset"]]
                self._close_spool(part["offset"])

    def next_to_read(self) -> tuple[dict[str, Any], _Spool | None] | None:
        """The landed part at ``position`` and its spool (the caller reads it into
        ``digest`` and closes the spool), if no other thread is busy."""
        with self._lock:
            if self._busy:
                return None
            part = self._landed.pop(self.position, None)
            if part is None:
                return None
            self._busy = True
            return part, self._spools.pop(part["offset"], None)

    def _close_spool(self, offset: int) -> None:
        spool = self._spools.pop(offset, None)
        if spool is not None:
            spool.close()

    def close(self) -> None:
        """Close the spools still kept (the upload is over, or forgotten here)."""
        with self._lock:
            for offset in list(self._spools):
                self._close_spool(offset)

    def stop_reading(self, part: dict[str, Any] | None) -> None:
        with self._lock:
            if part is not None:
                self.position += part["size"]
                self.consumed.append(_part_key(part))
            self._busy = False

    def resume(self, parts: list[dict[str, Any]]) -> tuple[Any, int]:
        """A copy of the digest and its position, if the parts hashed are the first of
        ``parts``; else a fresh digest at 0."""
        with self._lock:
            if (not self._busy and len(self.consumed) <= len(parts)
                    and self.consumed == [_part_key(p) for p in parts[:len(self.consumed)]]):
                return self.digest.copy(), self.position
        return hashlib.sha256(), 0


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
    :param direct_writes: write the parts of uploads with ``O_DIRECT`` where the filesystem
        allows (see :class:`_DataWriter`).
    :raises StorageError: if the root cannot be created or its areas are not all on one
        filesystem.
    """

    def __init__(self, root: str | os.PathLike[str], *, direct_writes: bool = True) -> None:
        self.direct_writes = direct_writes
        with _fs_errors("creating the storage directories"):
            Path(root).mkdir(parents=True, exist_ok=True)
            self.root = Path(root).resolve(strict=True)
            for area in ("blobs/sha256", "uploads", "tmp"):
                self._contained(self.root / area, self.root).mkdir(parents=True, exist_ok=True)
        self._blobs = self._contained(self.root / "blobs" / "sha256", self.root)
        self._uploads = self._contained(self.root / "uploads", self.root)
        self._tmp = self._contained(self.root / "tmp", self.root)
        #: The running sha256 of each upload receiving parts in this process.
        self._running: dict[str, _RunningHash] = {}
        self._running_lock = threading.Lock()
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
            _fsync_dir(path.parent)  # the data file survives a crash with its parts
        return {"id": upload_id, "offset": 0}

    # ------------------------------------------------------------------- numbered parts
    #
    # A part sent with its ``offset`` (the core always knows it) is written in place: at its
    # offset into the upload's data file ``uploads/<id>``, which becomes the blob itself at
    # completion (a rename, no copy).  The parts directory ``uploads/<id>.parts/`` holds,
    # per part number ``n``, symbolic links used as atomic, durable records (a symlink is
    # created or not, and its target is its content):
    #
    #   n.lock       the region of part n is being written ("w") or read ("r"); created
    #                exclusively, so one process at a time touches the region
    #   n.in         part n is in the data file: target "<offset>-<size>-<sha256>"; created
    #                only by the holder of n.lock, after the region was flushed (fdatasync)
    #   n-<sha256>   part n as a file of its own (the older layout, and the fallback)
    #   completing   a completion is under way: writers keep out of the data file
    #
    # A region is written only by the holder of its lock, and only while no n.in exists:
    # bytes a part was acknowledged with never change while it is recorded.  A writer that
    # cannot have the region (a lock left by a crashed or stalled sender, a record already
    # there, a completion under way) stores the part as a file of its own instead, which is
    # always correct.  Completion renames the data file into the blob store when every part
    # is in place, in order, and no writer holds a lock; otherwise it assembles a copy.
    #
    # The whole file's sha256 follows the parts as they land, in this process
    # (:class:`_RunningHash`); completion reads from the data file only what it missed.

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

    def _ensure_parts_dir(self, state: Any) -> Path:
        directory = self._parts_dir(state)
        with _fs_errors("receiving a part"):
            try:
                directory.mkdir()
            except FileExistsError:
                pass
            else:  # the directory's entry must survive a crash with the parts it holds
                _fsync_dir(directory.parent)
        return directory

    def upload_part(
        self, state: dict[str, Any], *, number: int, stream: BinaryIO, length: int,
        expected_sha256: str | None = None, offset: int | None = None,
    ) -> dict[str, Any]:
        if expected_sha256 is not None:
            validate_sha256(expected_sha256)
        self._part_path(state, number, "0" * 64)  # validates the number and the state
        if length < 0:
            raise ValueError(f"negative part length {length}")
        if offset is not None and (not isinstance(offset, int) or offset < 0):
            raise ValueError(f"invalid part offset {offset!r}")
        if not self._upload_path(state).exists():
            raise UploadNotFound("the upload was aborted, completed or cleaned up")
        directory = self._ensure_parts_dir(state)
        if offset is not None and _IN_PLACE:
            lock = _RegionLock.take(directory, number, "w")
            if lock is not None:
                try:
                    if not (os.path.lexists(directory / f"{number}.in")
                            or os.path.lexists(directory / _COMPLETING)):
                        return self._write_in_place(state, directory, number, stream, length,
                                                    expected_sha256, offset)
                finally:
                    lock.release()
        return self._write_part_file(state, number, stream, length, expected_sha256)

    def _write_in_place(
        self, state: dict[str, Any], directory: Path, number: int, stream: BinaryIO,
        length: int, expected_sha256: str | None, offset: int,
    ) -> dict[str, Any]:
        """Write the part at ``offset`` of the data file (the caller holds its region)."""
        upload_id = state["id"]
        running = self._running_hash(upload_id)
        feeding = running.start_feeding(offset)
        # Out of order: keep where the bytes were spooled, to hash them from there later.
        spool = None if feeding else _Spool.of(stream, length)
        try:
            with _fs_errors("receiving a part"):
                try:
                    writer = _DataWriter(self._upload_path(state), self.direct_writes)
                except FileNotFoundError:
                    raise UploadNotFound("the upload was aborted, completed or cleaned up") \
                        from None
            try:
                digest = _copy_in(stream, length, writer.write, offset,
                                  running.digest if feeding else None)
                with _fs_errors("receiving a part"):
                    writer.sync()
            finally:
                writer.close()
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and not hmac.compare_digest(sha256, expected_sha256):
                raise DigestMismatch(expected_sha256, sha256)
            with _fs_errors("receiving a part"):
                if not self._upload_path(state).exists():  # aborted meanwhile
                    raise UploadNotFound("the upload was aborted, completed or cleaned up")
                os.symlink(_region(offset, length, sha256), directory / f"{number}.in")
                _fsync_dir(directory)
        except BaseException:
            if feeding:
                running.stop_feeding(None)
            if spool is not None:
                spool.close()
            if not self._upload_path(state).exists():  # aborted meanwhile: no empty folder
                self._remove_parts(state)
            raise
        part = {"number": number, "size": length, "sha256": sha256, "offset": offset}
        if feeding:
            running.stop_feeding(part)
        else:
            running.landed(part, spool)
        self._catch_up(state, running)
        return part

    def _write_part_file(
        self, state: dict[str, Any], number: int, stream: BinaryIO, length: int,
        expected_sha256: str | None,
    ) -> dict[str, Any]:
        """Store the part as a file of its own (``n-<sha256>``)."""
        with _fs_errors("receiving a part"):
            fd, tmp = tempfile.mkstemp(prefix="part-", dir=self._contained(self._tmp, self.root))
        try:
            try:
                digest = _copy_in(stream, length, lambda view, at: _write_all(fd, view), 0,
                                  None)
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
                _fsync_dir(target.parent)
        except BaseException:
            _unlink_quietly(tmp)
            if not self._upload_path(state).exists():  # aborted meanwhile: no empty folder
                self._remove_parts(state)
            raise
        return {"number": number, "size": length, "sha256": sha256}

    def delete_part(self, state: dict[str, Any], part: dict[str, Any]) -> None:
        number, sha256 = part.get("number"), part.get("sha256")
        path = self._part_path(state, number, sha256)
        offset = part.get("offset")
        if offset is None:
            _unlink_quietly(path)
            return
        record = path.parent / f"{number}.in"
        with contextlib.suppress(OSError):
            if os.readlink(record) == _region(offset, part.get("size"), sha256):
                os.unlink(record)
        running = self._running.get(state["id"])
        if running is not None:
            running.forget(part)

    # ------------------------------------------------------------------- the running hash

    def _running_hash(self, upload_id: str) -> _RunningHash:
        with self._running_lock:
            running = self._running.get(upload_id)
            if running is None:
                while len(self._running) >= _MAX_RUNNING:  # uploads abandoned here
                    self._running.pop(next(iter(self._running))).close()
                running = self._running[upload_id] = _RunningHash()
            return running

    def _catch_up(self, state: dict[str, Any], running: _RunningHash) -> None:
        """Hash the parts that landed here in order after the running hash's position
        (parts written while another was being hashed): from their spool while it is
        kept, else from the data file."""
        directory = self._parts_dir(state)
        while (found := running.next_to_read()) is not None:
            part, spool = found
            done = False
            try:
                if spool is not None:
                    hashed = spool.hashed(running.digest)
                    if hashed is not None:
                        running.digest, done = hashed, True
                if not done:
                    done = self._hash_from_data(state, directory, part, running)
            except OSError:
                done = False
            finally:
                if spool is not None:
                    spool.close()
                running.stop_reading(part if done else None)
            if not done:
                return

    def _hash_from_data(self, state: dict[str, Any], directory: Path, part: dict[str, Any],
                        running: _RunningHash) -> bool:
        """Feed the part's region of the data file to the running hash, holding the
        region's lock (so that nobody rewrites it meanwhile) and checking its record."""
        lock = _RegionLock.take(directory, part["number"], "r")
        if lock is None:
            return False
        try:
            if not _read_region_record(directory, part):
                return False
            digest = running.digest.copy()
            with open(self._upload_path(state), "rb", buffering=0) as data:
                if _hash_region(data, part["offset"], part["size"], digest) != part["size"]:
                    return False
            running.digest = digest
            return True
        finally:
            lock.release()

    # ------------------------------------------------------------------- completion

    def complete_parts(
        self, state: dict[str, Any], parts: list[dict[str, Any]], *, expected_sha256: str
    ) -> BlobInfo:
        validate_sha256(expected_sha256)
        if not self._upload_path(state).exists():
            raise UploadNotFound("the upload was aborted, completed or cleaned up")
        for part in parts:  # validates every description
            self._part_path(state, part.get("number"), part.get("sha256"))
        directory = self._ensure_parts_dir(state)
        completing = directory / _COMPLETING
        with _fs_errors("completing an upload"), contextlib.suppress(FileExistsError):
            os.symlink("c", completing)
        try:
            info = self._complete(state, directory, parts, expected_sha256)
        except BaseException:
            _unlink_quietly(completing)
            raise
        self.abort_upload(state)
        return info

    def _complete(self, state: dict[str, Any], directory: Path, parts: list[dict[str, Any]],
                  expected_sha256: str) -> BlobInfo:
        data_path = self._upload_path(state)
        sources: list[tuple[Path, int, int]] = []  # (file, offset, size) of each part
        in_place, position = True, 0
        for part in parts:
            if part.get("offset") is not None and _read_region_record(directory, part):
                sources.append((data_path, part["offset"], part["size"]))
                in_place = in_place and part["offset"] == position
            else:
                path = self._part_path(state, part.get("number"), part.get("sha256"))
                if not path.is_file():
                    raise UploadNotFound(f"part {part.get('number')} of the upload is gone")
                sources.append((path, 0, part.get("size", 0)))
                in_place = False
            position += part.get("size", 0)
        # A writer that took its region before ``completing`` existed may still hold the
        # data file open: then the file cannot become the blob (it could still change).
        in_place = in_place and not _RegionLock.writers(directory)
        if in_place:
            return self._complete_in_place(state, data_path, parts, position, expected_sha256)
        return self._complete_by_copy(sources, expected_sha256)

    def _complete_in_place(self, state: dict[str, Any], data_path: Path,
                           parts: list[dict[str, Any]], size: int,
                           expected_sha256: str) -> BlobInfo:
        running = self._running.get(state["id"])
        digest, start = (running.resume(parts) if running is not None
                         else (hashlib.sha256(), 0))
        with _fs_errors("completing an upload"):
            with open(data_path, "r+b", buffering=0) as data:
                if start < size:
                    _hash_region(data, start, size - start, digest)
                sha256 = digest.hexdigest()
                if start and not hmac.compare_digest(sha256, expected_sha256):
                    # The running hash is only a shortcut: refuse on a full reading alone.
                    digest = hashlib.sha256()
                    _hash_region(data, 0, size, digest)
                    sha256 = digest.hexdigest()
                if not hmac.compare_digest(sha256, expected_sha256):
                    raise DigestMismatch(expected_sha256, sha256)  # the parts stay
                if os.fstat(data.fileno()).st_size != size:
                    data.truncate(size)  # bytes a dropped chunk left past the end
                os.fsync(data.fileno())
        self._install(data_path, sha256, size)
        return BlobInfo(sha256, size)

    def _complete_by_copy(self, sources: list[tuple[Path, int, int]],
                          expected_sha256: str) -> BlobInfo:
        with _fs_errors("completing an upload"):
            fd, tmp = tempfile.mkstemp(prefix="put-", dir=self._contained(self._tmp, self.root))
        try:
            digest = hashlib.sha256()
            size = 0
            try:
                with _fs_errors("completing an upload"):
                    for path, offset, length in sources:
                        try:
                            source = open(path, "rb", buffering=0)
                        except FileNotFoundError:
                            raise UploadNotFound("a part of the upload is gone") from None
                        with source:
                            got = _hash_region(source, offset, length, digest,
                                               lambda view: _write_all(fd, view))
                        if got != length:
                            raise UploadNotFound("a part of the upload is incomplete")
                        size += length
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
        return BlobInfo(sha256, size)

    def abort_upload(self, state: dict[str, Any]) -> None:
        path = self._upload_path(state)
        with _fs_errors("aborting an upload"), contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._remove_parts(state)
        with self._running_lock:
            running = self._running.pop(state["id"], None)
        if running is not None:
            running.close()


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
    direct = str(settings.get(DIRECT_WRITES_SETTING, "true")).strip().lower()
    if direct not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise RuntimeError(f"{DIRECT_WRITES_SETTING} must be true or false, not {direct!r}")
    return LocalBlobStore(path, direct_writes=direct in ("true", "1", "yes", "on"))


@hookimpl
def modelreg_storage_backends() -> list[BackendDescription]:
    """Offer the ``local`` backend."""
    return [BackendDescription(
        "local", create_store,
        "files in a local directory (one machine, or a filesystem shared by several)",
    )]
