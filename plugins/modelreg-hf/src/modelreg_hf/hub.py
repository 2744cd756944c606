"""How the Hub's names map onto the registry's: repo ids, revisions, commit ids, errors.

* A repo id ``name`` and ``modelreg/name`` (``modelreg.hf.namespace``) are the model
  ``name``; ``org/name`` is the model ``org--name`` (the client refuses ``--`` in a repo id).
  The client parses only namespaced repo URLs (``create_repo``'s and a commit's answer), so
  the registry answers with the namespaced form.
* A version's commit id is the first 40 hex characters of its manifest digest: stable, a
  ready version's own, and usable as a revision.
* Revisions: an alias, a version number, a commit id, ``sha256:<digest>``, or ``main``: the
  alias ``main`` when the model has one, else the newest ready version.
"""

from __future__ import annotations

import re
from typing import Any

from pyramid.request import Request
from pyramid.response import Response

from modelreg.api import ApiError, NotFound, Registry

#: The branch every Hub repo has.
MAIN = "main"
COMMIT_ID = re.compile(r"[0-9a-f]{40}")
_NUMBER = re.compile(r"[0-9]{1,10}")

#: modelreg error codes and the Hub's ``X-Error-Code`` the client turns into its exceptions.
HUB_CODES = {
    "model_not_found": "RepoNotFound",
    "version_not_found": "RevisionNotFound",
    "alias_not_found": "RevisionNotFound",
    "revision_not_found": "RevisionNotFound",
    "file_not_found": "EntryNotFound",
    "entry_not_found": "EntryNotFound",
}
#: The message the client recognises as a refused token (``huggingface_hub.utils._http``).
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
#: Where the view notes the commit id of the revision, for ``X-Repo-Commit`` on errors.
COMMIT_KEY = "modelreg_hf.commit"


def model_of(repo_id: str, namespace: str) -> str:
    """The model a repo id names: ``name`` and ``{namespace}/name`` are ``name``,
    ``org/name`` is ``org--name``."""
    org, slash, name = repo_id.partition("/")
    if not slash:
        return repo_id
    return name if org == namespace else f"{org}--{name}"


def repo_id_of(model: str, namespace: str) -> str:
    """The namespaced repo id of a model: ``org--name`` is ``org/name``, ``name`` is
    ``{namespace}/name`` (the client parses only namespaced repo URLs)."""
    org, dashes, name = model.partition("--")
    return f"{org}/{name}" if dashes and org and name else f"{namespace}/{model}"


def commit_id(version: dict[str, Any]) -> str | None:
    """A ready version's commit id (40 hex characters of its manifest digest)."""
    digest = version.get("digest")
    return digest.removeprefix("sha256:")[:40] if digest else None


def revision_not_found(model: str, revision: str) -> NotFound:
    """404 ``RevisionNotFound``."""
    return NotFound(f"model {model!r} has no revision {revision!r} (a "
                    "revision is main, an alias, a version number or a commit id)",
                    code="revision_not_found", details={"revision": revision})


def branch_version(reg: Registry, model: str, branch: str) -> dict[str, Any] | None:
    """The version a branch points at: the alias of that name, or for ``main`` without one
    the newest ready version; ``None`` for ``main`` of a model with no ready version."""
    aliases = {a["alias"]: a for a in reg.list_aliases(model)}
    if branch in aliases:
        return reg.get_version(model, branch)
    if branch != MAIN:
        raise revision_not_found(model, branch)
    try:
        return reg.get_version(model, "latest")
    except ApiError as exc:
        if exc.code == "version_not_found":
            return None
        raise


def resolve(reg: Registry, model: str, revision: str | None) -> dict[str, Any]:
    """The ready version a revision names (404 ``RevisionNotFound`` otherwise)."""
    revision = revision or MAIN
    if COMMIT_ID.fullmatch(revision):
        version = reg.find_version(model, revision)
    elif revision == MAIN or not (_NUMBER.fullmatch(revision)
                                  or revision.startswith("sha256:")):
        try:
            version = branch_version(reg, model, revision)
        except ApiError as exc:
            if exc.code in ("version_not_found", "alias_not_found", "invalid_ref"):
                raise revision_not_found(model, revision) from None
            raise
    else:
        try:
            version = reg.get_version(model, revision)
        except ApiError as exc:
            if exc.status in (404, 422) and exc.code != "model_not_found":
                raise revision_not_found(model, revision) from None
            raise
    if version is None or version.get("status") != "ready" or not version.get("digest"):
        raise revision_not_found(model, revision)
    return version


def _header_text(text: str) -> str:
    """``text`` as one line of ASCII for a header."""
    flat = " ".join(str(text).split())
    return flat.encode("ascii", "replace").decode("ascii")[:1000]


def render_error(request: Request, error: ApiError) -> Response:
    """An error as the Hub answers it: ``{"error": message}`` with ``X-Error-Code`` (which
    the client turns into ``RepositoryNotFoundError``, ``RevisionNotFoundError``,
    ``EntryNotFoundError``) and ``X-Error-Message``."""
    message = error.message
    hub_code = HUB_CODES.get(error.code)
    if error.status == 401:
        if error.code == "unauthorized":
            # The Hub's answer to an anonymous caller of a repo it may not see.
            hub_code = "RepoNotFound"
        else:
            message = f"{INVALID_CREDENTIALS}: {message}"
            hub_code = None
    body: dict[str, Any] = {"error": message, "code": error.code}
    if "url" in error.details:
        body["url"] = error.details["url"]
    response = Response(json_body=body, status=error.status, charset="utf-8")
    response.content_type = "application/json"
    if hub_code is not None:
        response.headers["X-Error-Code"] = hub_code
    response.headers["X-Error-Message"] = (INVALID_CREDENTIALS if message.startswith(
        INVALID_CREDENTIALS) else _header_text(message))
    commit = request.environ.get(COMMIT_KEY)
    if commit and hub_code == "EntryNotFound":
        response.headers["X-Repo-Commit"] = commit
    return response
