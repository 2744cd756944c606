"""Recognise a file by its bytes and run the scanners that apply.

A file can be more than one thing (a pickle that is also a zip, a polyglot): every scanner
whose format matches runs.  Extensions are never consulted at the top level.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any

from . import archives
from .config import ScanConfig
from .numpyfiles import is_npy, scan_npy
from .pickles import SNIFF_SIZE, scan_if_pickle
from .report import ERROR, WARNING, finding
from .safetensors import looks_like_safetensors, scan_safetensors

#: How deep archives and compressed files inside one another are followed.
MAX_DEPTH = 3


@dataclass
class ScanResult:
    """What scanning one file found.

    :ivar formats: the formats recognised (``pickle``, ``safetensors``, ``zip``, ``tar``,
        ``gzip``, ...); empty for an unknown format.
    :ivar findings: findings as dicts (``code``, ``message``, ``severity``, ``details``).
    """

    formats: list[str] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def handled(self) -> bool:
        """Whether any scanner recognised the file."""
        return bool(self.formats)

    def as_json(self) -> dict[str, Any]:
        """The JSON the scan subprocess prints."""
        return {"formats": self.formats, "findings": self.findings}


def detect(path: str, head: bytes) -> list[str]:
    """The container formats of the file at ``path`` whose first bytes are ``head``
    (pickles are recognised by reading them: see :func:`scan_if_pickle`)."""
    formats = []
    if looks_like_safetensors(head):
        formats.append("safetensors")
    if is_npy(head):
        formats.append("npy")
    if archives.is_zip(head) or (not formats and zipfile.is_zipfile(path)):
        formats.append("zip")
    if archives.is_tar(head):
        formats.append("tar")
    compression = archives.compression_of(head)
    if compression:
        formats.append(compression[0])
    return formats


def scan_path(path: str, config: ScanConfig, depth: int = 0) -> ScanResult:
    """Scan the file at ``path`` with every scanner that recognises it."""
    size = os.path.getsize(path)
    with open(path, "rb") as stream:
        head = stream.read(SNIFF_SIZE)
    result = ScanResult(formats=detect(path, head))
    with open(path, "rb") as stream:
        found = scan_if_pickle(stream, allowed=config.allow_globals, size=size)
    if found is not None and "safetensors" in result.formats and all(
            f["code"] == "pickle_malformed" for f in found):
        # The 8-byte length of a safetensors file can start like a PROTO opcode; it is
        # taken for a pickle only when, read as one, it would import something.
        found = None
    if found is not None:
        result.formats.insert(0, "pickle")
        result.findings += found

    def nested(inner: str) -> list[dict[str, Any]]:
        if depth >= MAX_DEPTH:
            return [finding("archive_too_deep",
                            f"archives are nested more than {MAX_DEPTH} deep")]
        return scan_path(inner, config, depth + 1).findings

    for kind in list(result.formats):
        if kind == "pickle":
            continue
        if kind == "safetensors":
            with open(path, "rb") as stream:
                result.findings += scan_safetensors(stream, size, config.max_header)
        elif kind == "npy":
            with open(path, "rb") as stream:
                result.findings += scan_npy(stream, size, allowed=config.allow_globals)
        elif kind == "zip":
            result.findings += archives.scan_zip(path, size, config, nested)
        elif kind == "tar":
            result.findings += archives.scan_tar(path, config, nested)
        else:
            found = _scan_compressed(path, head, size, config, depth, nested)
            if found is None:
                result.formats.remove(kind)  # a weak prefix over data that is no such stream
            else:
                result.findings += found
    if not result.formats and config.unknown != "ignore":
        result.formats.append("unknown")
        result.findings.append(finding(
            "unknown_format", "no scanner recognises this file's format",
            ERROR if config.unknown == "reject" else WARNING))
    return result


def _scan_compressed(path: str, head: bytes, size: int, config: ScanConfig, depth: int,
                     nested: archives.Nested) -> list[dict[str, Any]] | None:
    """Findings for a compressed file, or ``None`` when its prefix is a weak one
    (:data:`archives.WEAK`) over bytes that do not decompress into anything."""
    compression = archives.compression_of(head)
    assert compression is not None
    name, open_compressed = compression
    weak = name in archives.WEAK
    broken: Exception | None = None
    try:
        _, inner_head, bombs = archives.measure(path, open_compressed, size, config)
    except Exception as exc:  # every decompressor has errors of its own
        if not weak:
            return [finding("archive_malformed", f"the {name} stream cannot be read: {exc}")]
        bombs, inner_head, broken = [], b"", exc
    if bombs:
        return bombs
    if archives.is_tar(inner_head) and name in ("gzip", "bzip2", "xz"):
        return archives.scan_tar(path, config, nested)
    if depth >= MAX_DEPTH:
        return [finding("archive_too_deep",
                        f"archives are nested more than {MAX_DEPTH} deep")]
    directory = tempfile.mkdtemp(prefix="modelreg-scan-")
    try:
        inner = os.path.join(directory, "inner")
        copied = 0
        try:
            with open_compressed(path, "rb") as source, open(inner, "wb") as target:
                # what decompresses before an error is what a loader reads before it
                while chunk := source.read(archives.CHUNK):
                    target.write(chunk)
                    copied += len(chunk)
        except Exception as exc:  # every decompressor has errors of its own
            if not weak:
                raise
            broken = exc
        if weak and broken is not None and not copied:
            return None
        scanned = scan_path(inner, config, depth + 1)
        if weak and broken is not None and not scanned.formats:
            return None
        return [{**f, "details": {**f["details"], "compression": name}}
                for f in scanned.findings]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
