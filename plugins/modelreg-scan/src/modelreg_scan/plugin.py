"""The ``scan`` plugin: ``modelreg_scan_file`` for pickles, safetensors and archives."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

from modelreg.api import Finding, hookimpl

from .config import ScanConfig
from .sandbox import ScanFailed, scan_in_subprocess

__all__ = ["ScanFailed", "modelreg_scan_file"]


@hookimpl
def modelreg_scan_file(
    file: dict[str, Any], opener: Callable[[], IO[bytes]], settings: dict[str, Any]
) -> list[Finding] | None:
    """Scan one file in a subprocess limited by ``modelreg.scan.timeout`` and
    ``modelreg.scan.max_memory``.

    :returns: the findings (an empty list for a clean file), or ``None`` when no scanner
        recognises the file's format (unless ``modelreg.scan.unknown`` says otherwise).
    :raises ScanFailed: when the scan crashed, timed out or ran out of memory: the core
        fails closed.
    """
    config = ScanConfig.from_settings(settings)
    result = scan_in_subprocess(opener, file["path"], config)
    if not result["formats"]:
        return None
    return [
        Finding(code=item["code"], message=item["message"], severity=item["severity"],
                path=file["path"], details={**item.get("details", {}),
                                            "formats": result["formats"]})
        for item in result["findings"]
    ]
