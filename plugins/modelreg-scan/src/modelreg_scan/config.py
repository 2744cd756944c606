"""The scanner's settings, read from ``modelreg.scan.*`` and handed to the scan subprocess.

This module, like every scanner module, imports nothing from ``modelreg``: the subprocess
that scans a file must start quickly and load as little code as possible.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

PREFIX = "modelreg.scan."

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}

UNKNOWN_POLICIES = ("ignore", "warn", "reject")


def parse_size(text: str | int) -> int:
    """``"512MiB"``, ``"1GB"``, ``"1048576"`` -> a number of bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 1048576, 512MiB or 2GB)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()])


@dataclass(frozen=True)
class ScanConfig:
    """Limits and policy of the scanners.

    :ivar timeout: seconds one file's scan may take (``modelreg.scan.timeout``).
    :ivar max_memory: address-space limit of the scan subprocess in bytes
        (``modelreg.scan.max_memory``).
    :ivar max_ratio: largest allowed ratio of uncompressed to compressed size of an archive
        or a member (``modelreg.scan.max_ratio``).
    :ivar max_uncompressed: largest allowed total uncompressed size of an archive
        (``modelreg.scan.max_uncompressed``).
    :ivar max_members: most members an archive may have (``modelreg.scan.max_members``).
    :ivar max_header: largest allowed safetensors header (``modelreg.scan.max_header``).
    :ivar unknown: what to do with a file of no known format: ``ignore`` (no findings),
        ``warn`` or ``reject`` (``modelreg.scan.unknown``).
    :ivar allow_globals: extra ``module.name``, ``module:qualified.name`` or ``module.*``
        imports a pickle may make (``modelreg.scan.allow_globals``; see
        :func:`modelreg_scan.pickles.is_allowed`).
    """

    timeout: float = 60.0
    max_memory: int = 2 * 2**30
    max_ratio: float = 100.0
    max_uncompressed: int = 64 * 2**30
    max_members: int = 100_000
    max_header: int = 100 * 10**6
    unknown: str = "ignore"
    allow_globals: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> ScanConfig:
        """The configuration described by ``modelreg.scan.*`` settings; defaults otherwise.

        :raises ValueError: on a value that cannot be understood.
        """

        def get(name: str) -> Any:
            value = settings.get(PREFIX + name)
            return None if value is None or str(value).strip() == "" else value

        values: dict[str, Any] = {}
        if (value := get("timeout")) is not None:
            values["timeout"] = float(value)
        for name in ("max_memory", "max_uncompressed", "max_header"):
            if (value := get(name)) is not None:
                values[name] = parse_size(value)
        if (value := get("max_ratio")) is not None:
            values["max_ratio"] = float(value)
        if (value := get("max_members")) is not None:
            values["max_members"] = int(value)
        if (value := get("unknown")) is not None:
            if value not in UNKNOWN_POLICIES:
                raise ValueError(f"{PREFIX}unknown must be one of {', '.join(UNKNOWN_POLICIES)}")
            values["unknown"] = value
        if (value := get("allow_globals")) is not None:
            values["allow_globals"] = tuple(str(value).split())
        config = cls(**values)
        if config.timeout <= 0 or config.max_ratio <= 0:
            raise ValueError(f"{PREFIX}timeout and {PREFIX}max_ratio must be positive")
        return config

    def as_json(self) -> dict[str, Any]:
        """The configuration as JSON, to hand to the scan subprocess."""
        data = asdict(self)
        data["allow_globals"] = list(self.allow_globals)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScanConfig:
        """The inverse of :meth:`as_json`."""
        return cls(**{**data, "allow_globals": tuple(data.get("allow_globals", ()))})
