"""The ``scan`` plugin: ``modelreg_scan_file`` for pickles, safetensors and archives."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import IO, Any

from modelreg.api import Finding, WebSection, hookimpl, registry_of

from . import allowances
from .config import ScanConfig
from .sandbox import ScanFailed, scan_in_subprocess

__all__ = ["ScanFailed", "modelreg_scan_file"]


@hookimpl
def modelreg_migration_locations() -> str:
    """The Alembic branch ``modelreg_scan``: the table of allowances."""
    return "modelreg_scan:migrations"


@hookimpl
def modelreg_pyramid_configure(config: Any) -> None:
    """The admin API of allowances under ``/api/v1/scan/allowances``; the allowances of the
    settings are checked (a wrong one stops start-up) and synced to the table."""
    from . import views

    views.start(config)


@hookimpl
def modelreg_scan_file(
    model: dict[str, Any], version: dict[str, Any], file: dict[str, Any],
    opener: Callable[[], IO[bytes]], settings: dict[str, Any],
) -> list[Finding] | None:
    """Scan one file in a subprocess limited by ``modelreg.scan.timeout`` and
    ``modelreg.scan.max_memory``.

    Imports that an allowance permits for ``model`` come back as ``info`` findings
    ``pickle_import_allowed`` (:func:`modelreg_scan.allowances.apply`).

    :returns: the findings (an empty list for a clean file), or ``None`` when no scanner
        recognises the file's format (unless ``modelreg.scan.unknown`` says otherwise).
    :raises ScanFailed: when the scan crashed, timed out or ran out of memory: the core
        fails closed.
    """
    config = ScanConfig.from_settings(settings)
    result = scan_in_subprocess(opener, file["path"], config)
    if not result["formats"]:
        return None
    findings = [
        Finding(code=item["code"], message=item["message"], severity=item["severity"],
                path=file["path"], details={**item.get("details", {}),
                                            "formats": result["formats"]})
        for item in result["findings"]
    ]
    # the imports an operator's allowance permits for this model (audited): allowances.py
    return allowances.apply(model, version, file, findings, settings)


def _safetensors_details(finding: dict[str, Any]) -> str:
    """What the safetensors scanner extracted (dtypes, the header's ``__metadata__``), as an
    escaped definition list; empty for other findings."""
    if finding.get("code") != "safetensors_summary":
        return ""
    details = finding.get("details") or {}
    items = [("dtypes", ", ".join(f"{v} {k}" for k, v in
                                  (details.get("dtypes") or {}).items()))]
    items += [(f"metadata.{k}", v) for k, v in (details.get("metadata") or {}).items()]
    cells = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in items)
    return f'<dl class="tree">{cells}</dl>'


@hookimpl
def modelreg_web_sections(page: str, subject: dict[str, Any], request: Any
                          ) -> list[WebSection] | None:
    """On the web UI's version page: what the scanners found in the version's files
    (safetensors header metadata included, where the scanner extracted it)."""
    if page != "version":
        return None
    findings = registry_of(request).version_findings(subject["model"], subject["number"])
    if not findings:
        body = "<p>No findings.</p>" if subject.get("status") != "draft" else \
            "<p>Not scanned yet (a draft).</p>"
        return [WebSection(title="Scan findings", html=body, order=50)]
    rows = "".join(
        f"<tr><td>{escape(f['path'])}</td><td>{escape(f['severity'])}</td>"
        f"<td><code>{escape(f['scanner'])}/{escape(f['code'])}</code></td>"
        f"<td>{escape(f['message'])}{_safetensors_details(f)}</td></tr>" for f in findings)
    table = ('<div class="scroll"><table><thead><tr><th scope="col">File</th>'
             '<th scope="col">Severity</th><th scope="col">Code</th><th scope="col">Finding'
             f'</th></tr></thead><tbody>{rows}</tbody></table></div>')
    return [WebSection(title=f"Scan findings ({len(findings)})", html=table, order=50)]
