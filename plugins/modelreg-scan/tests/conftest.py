"""Fixtures of the scanner tests: a scan of bytes, in process or through the hook."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from modelreg_scan.config import ScanConfig
from modelreg_scan.scanner import scan_path


@pytest.fixture
def scan() -> Callable[..., dict[str, Any]]:
    """``scan(data, **config)``: the scanner's result for ``data``, in this process."""

    def run(data: bytes, **config: Any) -> dict[str, Any]:
        handle, path = tempfile.mkstemp(prefix="modelreg-scan-test-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            return scan_path(path, ScanConfig(**config)).as_json()
        finally:
            os.unlink(path)

    return run

