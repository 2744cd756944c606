"""Zip and tar archives (plain, gzip, bzip2, xz) and the compressed files joblib writes
(zlib, gzip, bzip2, lzma, xz, lz4, and its old ``ZF`` zlib files): member paths, links,
device files, decompression bombs, and the pickles inside.

PyTorch's checkpoints (``torch.save`` since 1.6, usually ``.pt``, ``.pth``, ``.bin`` or
``.ckpt``) are zip files holding ``<name>/data.pkl`` and raw tensor storages under
``<name>/data/``: their pickles are scanned like any other.  NumPy's ``.npz`` files are zips
of ``.npy`` files, read as :mod:`.numpyfiles` reads them.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from typing import IO, Any

from .config import ScanConfig
from .numpyfiles import is_npy, scan_npy
from .pickles import SNIFF_SIZE, TORCH_TAR_MEMBERS, scan_if_pickle
from .report import ERROR, finding
from .safetensors import looks_like_safetensors

#: Members smaller than this are never called bombs, whatever their ratio.
BOMB_FLOOR = 1 << 20
#: Read size while measuring a compressed stream.
CHUNK = 1 << 20

_PICKLE_NAMES = (".pkl", ".pickle")
_DRIVE = re.compile(r"^[A-Za-z]:")

class _ZlibFile(io.RawIOBase):
    """A zlib stream (joblib's ``zlib`` compressor, and its old ``ZF`` files from
    ``skip`` bytes on), decompressed as it is read."""

    def __init__(self, path: str, skip: int = 0) -> None:
        import zlib

        self._file = open(path, "rb")  # closed by close()
        self._file.seek(skip)
        self._inflate = zlib.decompressobj()
        self._ready = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._ready:
            if self._inflate.unconsumed_tail:
                data = self._inflate.unconsumed_tail
            elif self._inflate.eof:
                return 0
            else:
                data = self._file.read(CHUNK)
                if not data:
                    raise EOFError("the compressed stream ends before its end marker")
            self._ready = self._inflate.decompress(data, CHUNK)
        size = min(len(buffer), len(self._ready))
        buffer[:size] = self._ready[:size]
        self._ready = self._ready[size:]
        return size

    def close(self) -> None:
        self._file.close()
        super().close()


def _open_zlib(path: str, mode: str = "rb") -> IO[bytes]:
    return io.BufferedReader(_ZlibFile(path))


def _open_zfile(path: str, mode: str = "rb") -> IO[bytes]:
    # joblib < 0.10: "ZF", the length in hex padded to 19 bytes, maybe a space, zlib data
    # (read_zfile in joblib's numpy_pickle_compat.py)
    with open(path, "rb") as raw:
        header = raw.read(ZFILE_HEADER + 1)
    int(header[2:ZFILE_HEADER], 16)  # joblib fails here on anything else
    skip = ZFILE_HEADER + (header[ZFILE_HEADER:] == b" ")
    return io.BufferedReader(_ZlibFile(path, skip))


def _open_lzma(path: str, mode: str = "rb") -> IO[bytes]:
    return lzma.open(path, "rb", format=lzma.FORMAT_ALONE)


def _open_lz4(path: str, mode: str = "rb") -> IO[bytes]:
    try:
        import lz4.frame
    except ImportError as exc:
        raise OSError("lz4 is not installed where the scanner runs: lz4 files cannot be "
                      "read (pip install lz4)") from exc
    return lz4.frame.open(path, "rb")


def _open_zstd(path: str, mode: str = "rb") -> IO[bytes]:
    # pandas.read_pickle reads .zst pickles; the standard library has no zstd before 3.14
    try:
        import zstandard
    except ImportError as exc:
        raise OSError("zstandard is not installed where the scanner runs: zstd files cannot "
                      "be read (pip install zstandard)") from exc
    return zstandard.open(path, "rb")


#: joblib's old zlib files: "ZF" and this many bytes of header.
ZFILE_HEADER = 2 + len(hex(2**64))

#: Magic prefix -> (name, opener).  joblib picks its decompressor by these prefixes
#: (``_detect_compressor`` in joblib's numpy_pickle_utils.py), so they are read the same.
COMPRESSED: dict[bytes, tuple[str, Callable[..., IO[bytes]]]] = {
    b"\x1f\x8b": ("gzip", gzip.open),
    b"BZh": ("bzip2", bz2.open),
    b"\xfd7zXZ\x00": ("xz", lzma.open),
    b"\x04\x22\x4d\x18": ("lz4", _open_lz4),
    b"\x28\xb5\x2f\xfd": ("zstd", _open_zstd),
    b"\x5d\x00": ("lzma", _open_lzma),
    b"ZF": ("joblib-zfile", _open_zfile),
    b"\x78": ("zlib", _open_zlib),
}
#: Formats whose prefix random data has often: a stream that does not decompress is
#: data, not a broken compressed file (joblib fails on it before unpickling anything).
WEAK = frozenset({"lzma", "joblib-zfile", "zlib"})


def compression_of(head: bytes) -> tuple[str, Callable[..., IO[bytes]]] | None:
    """The compression format ``head`` starts with, and the function that opens it."""
    for magic, kind in COMPRESSED.items():
        if head.startswith(magic):
            if kind[0] == "zlib" and (len(head) < 2 or (head[0] << 8 | head[1]) % 31):
                return None  # no zlib header (its check bits)
            return kind
    return None


def is_tar(head: bytes) -> bool:
    """Whether ``head`` is the start of a POSIX (ustar or GNU) tar archive."""
    return head[257:262] == b"ustar"


def is_zip(head: bytes) -> bool:
    """Whether ``head`` starts with a zip local header (or is an empty zip)."""
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def path_problem(name: str) -> str | None:
    """Why a member name is unsafe to extract (absolute, drive, ``..``), or ``None``."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "absolute"
    if ".." in re.split(r"[\\/]", name):
        return "parent"
    return None


def _member_findings(name: str, kind: str | None, link: str | None = None) -> list[dict]:
    findings = []
    why = path_problem(name)
    if why:
        findings.append(finding(
            "archive_unsafe_path",
            f"member {name!r} has an {'absolute path' if why == 'absolute' else '.. component'}",
            ERROR, member=name))
    if kind in ("symlink", "hardlink"):
        findings.append(finding("archive_link", f"member {name!r} is a {kind} to {link!r}",
                                ERROR, member=name, target=link))
    elif kind == "device":
        findings.append(finding("archive_device", f"member {name!r} is a device file or fifo",
                                ERROR, member=name))
    return findings


def _bomb(config: ScanConfig, total: int, compressed: int, what: str) -> list[dict]:
    findings = []
    if total > config.max_uncompressed:
        findings.append(finding(
            "archive_too_large",
            f"{what} expands to more than {config.max_uncompressed} bytes",
            ERROR, uncompressed=total, limit=config.max_uncompressed))
    elif total > BOMB_FLOOR and total > compressed * config.max_ratio:
        findings.append(finding(
            "archive_bomb",
            f"{what} expands {total / max(compressed, 1):.0f} times (limit "
            f"{config.max_ratio:g})", ERROR, uncompressed=total, compressed=compressed,
            limit=config.max_ratio))
    return findings


#: Scans a file extracted from an archive, one level deeper.
Nested = Callable[[str], list[dict[str, Any]]]


def _scan_member(opener: Callable[[], IO[bytes]], name: str, size: int,
                 config: ScanConfig, nested: Nested | None, storage: bool = False,
                 layout: str | None = None) -> list[dict]:
    with opener() as stream:
        head = stream.read(SNIFF_SIZE)
    if is_npy(head):  # np.load reads any member of a zip that starts so
        with opener() as stream:
            return scan_npy(stream, size, allowed=config.allow_globals, member=name)
    if storage:
        return []  # raw tensor bytes of a torch checkpoint: torch.load never unpickles them
    with opener() as stream:
        found = scan_if_pickle(stream, allowed=config.allow_globals, member=name, size=size,
                               layout=layout)
    if found is not None:
        return found
    if nested is None or not (is_zip(head) or is_tar(head) or compression_of(head)
                              or looks_like_safetensors(head)):
        return []
    directory = tempfile.mkdtemp(prefix="modelreg-scan-")
    try:
        path = os.path.join(directory, "member")
        with opener() as stream, open(path, "wb") as out:
            shutil.copyfileobj(stream, out, CHUNK)
        found = nested(path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for item in found:
        inner = item["details"].get("member")
        item["details"]["member"] = f"{name}/{inner}" if inner else name
    return found


def scan_zip(path: str, size: int, config: ScanConfig,
             nested: Nested | None = None) -> list[dict[str, Any]]:
    """Findings for the zip archive at ``path``; ``nested`` scans archives and safetensors
    files inside it."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        return [finding("archive_malformed", f"the zip archive cannot be read: {exc}")]
    with archive:
        infos = archive.infolist()
        if len(infos) > config.max_members:
            return [finding("archive_too_many_members",
                            f"the archive has {len(infos)} members (limit "
                            f"{config.max_members})", ERROR, members=len(infos))]
        findings: list[dict[str, Any]] = []
        for info in infos:
            mode = info.external_attr >> 16
            kind = None
            if info.create_system == 3 and mode:
                if stat.S_ISLNK(mode):
                    kind = "symlink"
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) \
                        or stat.S_ISSOCK(mode):
                    kind = "device"
            link = None
            if kind == "symlink" and not info.flag_bits & 1 and info.file_size < 4096:
                link = archive.read(info).decode("utf-8", "replace")
            findings += _member_findings(info.filename, kind, link)
            if info.flag_bits & 1:
                findings.append(finding("archive_encrypted_member",
                                        f"member {info.filename!r} is encrypted and cannot "
                                        "be inspected", ERROR, member=info.filename))
            findings += [
                {**f, "details": {**f["details"], "member": info.filename}}
                for f in _bomb(config, info.file_size, info.compress_size,
                               f"member {info.filename!r}")
            ]
        total = sum(info.file_size for info in infos)
        findings += _bomb(config, total, size, "the archive")
        if any(f["code"] in ("archive_bomb", "archive_too_large") for f in findings):
            return findings  # never decompress a bomb
        # torch checkpoints: <root>/data.pkl and the raw storages <root>/data/<key>
        roots = {info.filename[: -len("data.pkl")] for info in infos
                 if info.filename == "data.pkl" or info.filename.endswith("/data.pkl")}
        for info in infos:
            if info.is_dir() or info.flag_bits & 1 or info.filename.endswith("/"):
                continue
            root, _, key = info.filename.rpartition("data/")
            storage = (root in roots and bool(key) and "/" not in key
                       and not key.lower().endswith(_PICKLE_NAMES))
            try:
                findings += _scan_member(lambda info=info: archive.open(info), info.filename,
                                         info.file_size, config, nested, storage)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError,
                    RuntimeError) as exc:
                findings.append(finding("archive_malformed",
                                        f"member {info.filename!r} cannot be read: {exc}",
                                        ERROR, member=info.filename))
        return findings


def measure(path: str, open_compressed: Callable[..., IO[bytes]], size: int,
            config: ScanConfig) -> tuple[int, bytes, list[dict[str, Any]]]:
    """Decompress ``path`` without keeping it: its length (up to the limits), its first
    bytes, and bomb findings."""
    total, head = 0, b""
    limit = min(config.max_uncompressed, int(max(size, 1) * config.max_ratio))
    with open_compressed(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            if len(head) < SNIFF_SIZE:
                head += chunk[:SNIFF_SIZE - len(head)]
            total += len(chunk)
            if total > max(limit, BOMB_FLOOR):
                return total, head, _bomb(config, total, size, "the compressed file")
    return total, head, []


def scan_tar(path: str, config: ScanConfig,
             nested: Nested | None = None) -> list[dict[str, Any]]:
    """Findings for the tar archive at ``path`` (plain or compressed: callers measure
    compressed ones for bombs first); ``nested`` scans archives inside it."""
    findings: list[dict[str, Any]] = []
    total = count = 0
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                count += 1
                if count > config.max_members:
                    findings.append(finding("archive_too_many_members",
                                            f"the archive has more than {config.max_members}"
                                            " members", ERROR, members=count))
                    return findings
                kind = None
                if member.issym():
                    kind = "symlink"
                elif member.islnk():
                    kind = "hardlink"
                elif member.ischr() or member.isblk() or member.isfifo():
                    kind = "device"
                findings += _member_findings(member.name, kind, member.linkname or None)
                total += member.size
                if total > config.max_uncompressed:
                    findings += _bomb(config, total, 0, "the archive")
                    return findings
                if member.isfile():
                    # torch.save's oldest layout: pickles and raw data interleaved
                    layout = member.name if member.name in TORCH_TAR_MEMBERS else None
                    findings += _scan_member(
                        lambda member=member: archive.extractfile(member),  # type: ignore[return-value]
                        member.name, member.size, config, nested, layout=layout)
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zlib_errors()) as exc:
        findings.append(finding("archive_malformed", f"the tar archive cannot be read: {exc}"))
    return findings


def zlib_errors() -> type[Exception]:
    """zlib's error class (gzip raises it for corrupt data)."""
    import zlib

    return zlib.error
