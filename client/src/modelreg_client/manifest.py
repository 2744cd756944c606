"""Local files and their manifest: hashing, the version digest, safe paths.

The version digest is defined once (docs/api.md) and computed here exactly as the server does:
``sha256:`` + the SHA-256 of the UTF-8 bytes of
``json.dumps(sorted entries, sort_keys=True, separators=(",", ":"))`` where each entry is
``{"path", "size", "sha256"}`` and entries are sorted by path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pathspec

__all__ = [
    "DEFAULT_IGNORES",
    "DIGEST_PREFIX",
    "HASH_BLOCK",
    "IGNORE_FILE",
    "FileRegion",
    "IgnoreRules",
    "LocalFile",
    "check_remote_path",
    "hash_file",
    "scan_directory",
    "unwritable_path",
    "version_digest",
]

DIGEST_PREFIX = "sha256:"
#: The file, at the top of a pushed directory, whose gitignore-style patterns say what to
#: leave out (:class:`IgnoreRules`).
IGNORE_FILE = ".modelregignore"
#: Bytes read at a time when hashing or copying a file.
HASH_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class LocalFile:
    """A file to push: its path inside the model (POSIX), where it is, size and sha256."""

    path: str
    source: Path
    size: int
    sha256: str


def version_digest(files: Iterable[Any]) -> str:
    """The version digest of ``files`` (objects or dicts with ``path``, ``size``,
    ``sha256``): ``sha256:<hex>``, equal to the server's for the same files."""
    entries = []
    for f in files:
        get = f.get if isinstance(f, dict) else lambda name, f=f: getattr(f, name)
        entries.append({"path": get("path"), "size": get("size"), "sha256": get("sha256")})
    entries.sort(key=lambda entry: entry["path"])
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return DIGEST_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def hash_file(
    path: Path, progress: Callable[[int], None] | None = None, *, limit: int | None = None
) -> tuple[int, Any]:
    """``(size, sha256 object)`` of a file (or of its first ``limit`` bytes), read in blocks
    (never whole into memory); ``.hexdigest()`` of the object is the hex digest, and it can go
    on hashing what follows.

    :param progress: called with the byte count of each block read.
    """
    digest = hashlib.sha256()
    size = 0
    buffer = memoryview(bytearray(HASH_BLOCK))  # one buffer, reused: no allocation per block
    with open(path, "rb", buffering=0) as stream:
        while limit is None or size < limit:
            want = HASH_BLOCK if limit is None else min(HASH_BLOCK, limit - size)
            n = stream.readinto(buffer[:want])
            if not n:
                break
            digest.update(buffer[:n])
            size += n
            if progress is not None:
                progress(n)
    return size, digest


class FileRegion:
    """A request body read from a region of a file: re-iterable (a retried ``PUT`` sends it
    again from its start), never whole in memory, reported block by block to ``on_block``
    (which may raise to abort the request).

    HTTP libraries send it with a ``Content-Length`` of ``len(region)``.
    """

    def __init__(self, path: Path, start: int, length: int,
                 on_block: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.start = start
        self.length = length
        self.on_block = on_block

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        remaining = self.length
        with open(self.path, "rb") as stream:
            stream.seek(self.start)
            while remaining > 0:
                block = stream.read(min(HASH_BLOCK, remaining))
                if not block:
                    raise OSError(f"{self.path} became shorter while it was being sent")
                remaining -= len(block)
                if self.on_block is not None:
                    self.on_block(len(block))
                yield block


def check_remote_path(path: str) -> PurePosixPath:
    """A file path as the server sent it, refused unless it is a plain relative path.

    A server (or anything between) must not make a pull write outside its destination.

    :raises ValueError: for absolute paths, ``..``, ``.``, empty parts, backslashes, NUL and
        control characters.
    """
    if not path or path.startswith("/") or "\\" in path:
        raise ValueError(f"refusing unsafe file path {path!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ValueError(f"refusing file path with control characters {path!r}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"refusing unsafe file path {path!r}")
    if parts[0].endswith(":"):  # a Windows drive
        raise ValueError(f"refusing unsafe file path {path!r}")
    return PurePosixPath(path)


#: Names Windows reserves for devices in every folder, with any extension, in any case.
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"{device}{n}" for device in ("com", "lpt") for n in "0123456789\u00b9\u00b2\u00b3"])
_WINDOWS_CHARACTERS = frozenset(':*?"<>|')


def _fold(name: str) -> str:
    """Canonical caseless form: names equal in it are one name on a case-insensitive or
    normalising filesystem."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", name).casefold())


def _name_max(root: Path) -> int:
    """The longest file name (bytes) the filesystem of ``root`` (or its nearest existing
    parent) takes."""
    for folder in (root, *root.parents):
        if folder.exists():
            try:
                return int(os.pathconf(folder, "PC_NAME_MAX"))
            except (AttributeError, OSError, ValueError):
                break
    return 255


def _same_name_here(root: Path, first: str, second: str) -> bool:
    """Whether the filesystem under ``root`` takes ``first`` and ``second`` for one name:
    asked of the filesystem itself, in a scratch folder removed at once."""
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".modelreg-names-", dir=root))
    try:
        (scratch / first).touch()
        return (scratch / second).exists()
    except OSError:
        return True  # it cannot even hold one of them: treat as a clash
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def unwritable_path(paths: Iterable[str], root: Path, *,
                    windows: bool | None = None) -> tuple[str, str] | None:
    """The first of the (already safe) ``paths`` that a pull cannot write under ``root``, with
    the reason, or ``None`` when every one can be written.  Nothing is written (but a scratch
    folder, removed at once, when two names differ only in case or Unicode form).

    Refused: a name longer than the filesystem takes; a file that another path needs as a
    folder (``x`` and ``x/y``); two names the filesystem takes for one (``A`` and ``a`` when
    it is case-insensitive, ``é`` in NFC and NFD when it normalises); on Windows (or with
    ``windows=True``) device names (``con``, ``nul.txt``, ``com1``), the characters
    ``: * ? " < > |`` and names ending in a dot or a space; a file or folder already in the
    way under ``root``.
    """
    windows = os.name == "nt" if windows is None else windows
    paths = sorted(paths)
    name_max = _name_max(root)
    files = set(paths)
    folders: dict[str, str] = {}  # folder path -> a file path under it
    for path in paths:
        parts = path.split("/")
        for segment in parts:
            if len(os.fsencode(segment)) > name_max:
                return path, f"a name is longer than {name_max} bytes"
            if windows:
                if _WINDOWS_CHARACTERS.intersection(segment):
                    return path, "Windows does not allow : * ? \" < > | in names"
                if segment[-1] in ". ":
                    return path, "Windows does not allow names ending in a dot or a space"
                if segment.split(".", 1)[0].rstrip(" ").lower() in _WINDOWS_DEVICES:
                    return path, f"{segment!r} is a device name on Windows"
        for i in range(1, len(parts)):
            folders.setdefault("/".join(parts[:i]), path)
    for folder, inside in folders.items():
        if folder in files:
            return folder, f"it is a file, but {inside!r} needs a folder of that name"
    # Names equal once case-folded or normalised, among the entries of each folder.
    seen: dict[tuple[str, str], str] = {}
    for entry in sorted(files | set(folders)):
        parent, _, name = entry.rpartition("/")
        key = (parent, _fold(name))
        other = seen.setdefault(key, entry)
        if other != entry and _same_name_here(root, other.rpartition("/")[2], name):
            return entry, f"this filesystem takes it for {other!r} (names differing only in " \
                "case or Unicode form)"
    for path in paths:
        target = root.joinpath(*path.split("/"))
        if target.is_dir() and not target.is_symlink():
            return path, f"a folder {target} is in the way"
        for parent in list(target.parents)[: path.count("/")]:
            if parent.exists() and not parent.is_dir():
                return path, f"a file {parent} is in the way of its folder"
    return None


#: Left out of every push unless an ``!pattern`` in ``.modelregignore`` (or ``--include``)
#: takes a file back: version control, Python caches, Finder's and editors' droppings.
DEFAULT_IGNORES = (
    ".git/", ".hg/", ".svn/", "__pycache__/", "*.pyc", "*.pyo", ".DS_Store", "Thumbs.db",
    "*.swp", "*.swo", "*~", ".#*", "#*#", IGNORE_FILE,
)


class IgnoreRules:
    """Which files of a directory a push leaves out, in gitignore syntax (pathspec).

    The rules, later ones winning as in a ``.gitignore``: :data:`DEFAULT_IGNORES`, then the
    directory's ``.modelregignore``, then ``exclude`` patterns.  When ``include`` patterns are
    given, only files that match one of them and that no rule leaves out are kept (like the
    Hugging Face Hub clients' ``allow_patterns`` and ``ignore_patterns``); a ``!pattern`` in
    ``.modelregignore`` takes back a file the defaults leave out.
    """

    def __init__(self, directory: Path, *, exclude: Iterable[str] = (),
                 include: Iterable[str] = (), defaults: bool = True) -> None:
        lines = list(DEFAULT_IGNORES) if defaults else []
        ignore_file = Path(directory) / IGNORE_FILE
        if ignore_file.is_file():
            lines += ignore_file.read_text(encoding="utf-8").splitlines()
        lines += list(exclude)
        self.exclude = pathspec.GitIgnoreSpec.from_lines(lines)
        include = list(include)
        self.include = pathspec.GitIgnoreSpec.from_lines(include) if include else None

    def keeps(self, path: str) -> bool:
        """Whether the file at relative POSIX ``path`` is pushed."""
        if self.include is not None and not self.include.match_file(path):
            return False
        return not self.exclude.match_file(path)

    def prunes(self, directory: str) -> bool:
        """Whether the relative POSIX ``directory`` is left out whole (not walked at all)."""
        return self.exclude.match_file(directory + "/")


def scan_directory(directory: Path, rules: IgnoreRules | None = None,
                   left_out: list[str] | None = None) -> list[tuple[str, Path]]:
    """Every regular file under ``directory`` as ``(relative POSIX path, location)``, sorted
    by path, less those ``rules`` leave out (whose paths are appended to ``left_out``, a
    directory left out whole as ``name/``).  Symbolic links to files are followed; links to
    directories are not (a link cycle cannot loop).

    :raises ValueError: when ``directory`` is not a directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory")
    found: list[tuple[str, Path]] = []
    skipped: list[str] = []
    for root, dirs, names in os.walk(directory):
        here = Path(root).relative_to(directory).as_posix()
        prefix = "" if here == "." else here + "/"
        if rules is not None:
            pruned = [d for d in dirs if rules.prunes(prefix + d)]
            skipped += [prefix + d + "/" for d in pruned]
            dirs[:] = [d for d in dirs if d not in pruned]
        dirs.sort()
        for name in names:
            location = Path(root) / name
            if location.is_file():
                relative = prefix + name
                if rules is None or rules.keeps(relative):
                    found.append((relative, location))
                else:
                    skipped.append(relative)
    found.sort(key=lambda item: item[0])
    if left_out is not None:
        left_out += sorted(skipped)
    return found
