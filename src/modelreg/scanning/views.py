"""``GET …/versions/{version}/findings``: what the scanners found in a version's files."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from pyramid.request import Request

from ..models import ScanFinding
from ..openapi import api_view
from ..permissions import READ
from . import finding_json


class FindingOut(BaseModel):
    """A scanner's finding in one file of a version."""

    path: str
    scanner: str
    severity: str
    code: str
    message: str
    details: dict[str, Any]


class FindingList(BaseModel):
    """The findings of a version, by file path."""

    model: str
    version: int
    status: str
    findings: list[FindingOut]


@api_view("api.version_findings", "GET", permission=READ, response=FindingList,
          tags=["versions"])
def list_findings(request: Request) -> dict[str, Any]:
    """List what the scanners found in a version's files (kept whether it rejected or not)."""
    version = request.registry_service.get_version(request.matchdict["model"],
                                                   request.matchdict["version"])
    rows = request.dbsession.scalars(
        sa.select(ScanFinding).where(ScanFinding.version_id == version.id)
        .order_by(ScanFinding.path, ScanFinding.id))
    return {"model": version.model.name, "version": version.number, "status": version.status,
            "findings": [finding_json(row) for row in rows]}
