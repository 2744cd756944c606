"""Run the scan of one file in a subprocess with a time and a memory limit.

Whatever goes wrong there -- a crash, a timeout, running out of memory, output that is not
the expected JSON -- raises :class:`ScanFailed`, so that the core fails closed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import IO, Any

from .config import ScanConfig

#: The command that scans a file (the file's path is appended).
SCAN_COMMAND: tuple[str, ...] = (sys.executable, "-m", "modelreg_scan.run")
#: Exit status of the subprocess when it ran out of memory (see :mod:`modelreg_scan.run`).
EXIT_MEMORY = 3
#: How much of the subprocess's standard error an exception quotes.
STDERR_TAIL = 2000


class ScanFailed(RuntimeError):
    """The scan of a file could not complete: the file must be treated as unsafe."""


def _copy(opener: Callable[[], IO[bytes]], target: str) -> None:
    source = opener()
    try:
        with open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def scan_in_subprocess(
    opener: Callable[[], IO[bytes]], name: str, config: ScanConfig,
    *, command: Sequence[str] = SCAN_COMMAND,
) -> dict[str, Any]:
    """Copy the bytes ``opener()`` returns to a temporary file and scan it in a subprocess.

    :param name: the file's path in the version, for messages.
    :param command: the scanning command; tests replace it with one that misbehaves.
    :returns: ``{"formats": [...], "findings": [...]}`` as printed by the subprocess.
    :raises ScanFailed: when the subprocess times out, crashes, is killed, runs out of
        memory or prints something else than a result.
    """
    directory = tempfile.mkdtemp(prefix="modelreg-scan-")
    try:
        path = os.path.join(directory, "file")
        _copy(opener, path)
        try:
            done = subprocess.run(  # noqa: S603 - our own interpreter and module
                [*command, path], input=json.dumps(config.as_json()).encode(),
                capture_output=True, timeout=config.timeout, cwd=directory, check=False,
                # its own temporary files go where ours go, and are removed with them even
                # when it is killed
                env={**os.environ, "TMPDIR": directory},
            )
        except subprocess.TimeoutExpired as exc:
            raise ScanFailed(f"scanning {name} took longer than {config.timeout:g} s") from exc
        stderr = done.stderr.decode("utf-8", "replace")[-STDERR_TAIL:].strip()
        if done.returncode < 0:
            number = -done.returncode
            hint = " (out of memory or CPU time?)" if number in (
                signal.SIGKILL, signal.SIGXCPU) else ""
            raise ScanFailed(
                f"the scan of {name} was killed by {_signal_name(number)}{hint}")
        if done.returncode == EXIT_MEMORY:
            raise ScanFailed(f"the scan of {name} ran out of memory "
                             f"(limit {config.max_memory} bytes)")
        if done.returncode != 0:
            raise ScanFailed(f"the scan of {name} crashed with status {done.returncode}: "
                             f"{stderr or 'no message'}")
        try:
            result = json.loads(done.stdout)
            if not isinstance(result.get("formats"), list) or not isinstance(
                    result.get("findings"), list):
                raise ValueError("missing formats or findings")
        except (ValueError, AttributeError) as exc:
            raise ScanFailed(f"the scan of {name} printed no result: {exc}") from exc
        return result
    finally:
        shutil.rmtree(directory, ignore_errors=True)
