"""The hook implementations of modelreg-hf (the ``hf`` entry point)."""

from __future__ import annotations

import html
from typing import Any

from pyramid.request import Request

from modelreg.api import WebSection, hookimpl

from .config import hub_settings
from .hub import repo_id_of


@hookimpl
def modelreg_pyramid_configure(config: Any) -> None:
    """The Hub's HTTP API for models at the root (``/api/models/...``, ``/{repo}/resolve/...``,
    ``/api/repos/create``, LFS under ``/{repo}.git/info/lfs`` and ``/hf-lfs``)."""
    config.include("modelreg_hf.views")


@hookimpl
def modelreg_web_sections(page: str, subject: dict[str, Any],
                          request: Request) -> list[WebSection] | None:
    """On a version's page: how to load it with ``huggingface_hub`` or ``transformers``."""
    if page != "version":
        return None
    model = str(subject.get("model") or "")
    if not model:
        return None
    aliases = subject.get("aliases") or []
    revision = aliases[0] if aliases else str(subject.get("number"))
    repo_id = repo_id_of(model, hub_settings(request.registry).namespace)
    endpoint = request.application_url
    snippet = (
        f"export HF_ENDPOINT={endpoint}\n"
        "export HF_TOKEN=mr_...   # a modelreg token\n"
        "python - <<'PY'\n"
        "from huggingface_hub import snapshot_download\n"
        f"path = snapshot_download({repo_id!r}, revision={revision!r})\n"
        "# or: transformers.AutoModel.from_pretrained("
        f"{repo_id!r}, revision={revision!r})\n"
        "PY\n")
    return [WebSection(title="Fetch with Hugging Face clients",
                       html=f"<pre><code>{html.escape(snippet)}</code></pre>", order=200)]
