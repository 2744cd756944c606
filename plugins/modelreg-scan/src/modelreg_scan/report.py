"""Findings as plain dicts inside the scan subprocess (the parent turns them into
:class:`modelreg.api.Finding`)."""

from __future__ import annotations

from typing import Any

#: Finding severities, as :class:`modelreg.api.Finding` defines them.
INFO, WARNING, ERROR = "info", "warning", "error"
#: How dangerous a pickle import is, in a finding's ``details["risk"]``.
CRITICAL, HIGH = "critical", "high"


def finding(code: str, message: str, severity: str = ERROR, **details: Any) -> dict[str, Any]:
    """A finding in the JSON shape the subprocess prints: ``code``, ``message``,
    ``severity`` and ``details`` (without ``None`` values)."""
    return {
        "code": code,
        "message": message,
        "severity": severity,
        "details": {key: value for key, value in details.items() if value is not None},
    }
