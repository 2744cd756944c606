"""``modelreg import mlflow --from URL``: copy an MLflow registry into modelreg.

Both sides are read and written over HTTP: MLflow's REST API and artifact proxy
(``/api/2.0/mlflow-artifacts/``) with ``--from-token`` (default ``MLFLOW_TRACKING_TOKEN``),
modelreg's REST API with the ``modelreg`` command's server and token (``MODELREG_URL``,
``MODELREG_TOKEN`` or ``modelreg login``); the token must be a global admin's, since keeping
MLflow's version numbers (gaps included) takes the admin-only import path
(``POST /api/v1/mlflow/import/models/{model}/versions``).

Idempotent and resumable: a model the import created carries the tag :data:`MARKER` (the
MLflow server's URL); a rerun skips versions already ready, finishes drafts an interrupted
run left (files already there are not sent again), syncs tags and descriptions, and moves
aliases that moved in MLflow.  A model that exists in modelreg without the marker is merged
only with ``--merge``, otherwise reported.  Whatever cannot be copied is reported, never
dropped silently.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import click
import requests

from modelreg_client.client import Client
from modelreg_client.config import load_settings
from modelreg_client.errors import InvalidRequest, ModelregError, NotFound
from modelreg_client.manifest import FileRegion

#: The model tag that says which MLflow server a model was imported from.
MARKER = "mlflow.import.source"
BLOCK = 1024 * 1024


@dataclass
class Report:
    """What an import did (or, with ``--dry-run``, would do)."""

    models: int = 0
    versions: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    aliases: int = 0

    def as_json(self) -> dict[str, Any]:
        """The closing report as one JSON object."""
        return {"models": self.models, "versions": self.versions, "bytes": self.bytes,
                "aliases": self.aliases, "skipped": self.skipped, "failed": self.failed}


class MlflowSource:
    """An MLflow tracking server read over its REST API and artifact proxy."""

    def __init__(self, url: str, token: str | None, timeout: float = 120.0, *,
                 user: str | None = None, password: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        elif user and password:  # MLflow's basic-auth app (mlflow server --app-name basic-auth)
            self.session.auth = (user, password)
        self.timeout = timeout

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        """``GET /api/2.0/mlflow/<path>`` as JSON (an error raises ``ClickException``)."""
        response = self.session.get(f"{self.url}/api/2.0/mlflow/{path}", params=params,
                                    timeout=self.timeout)
        if response.status_code != 200:
            raise click.ClickException(f"MLflow answered {response.status_code} to GET "
                                       f"{path}: {response.text[:300]}")
        return response.json()

    def pages(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged search."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            body = self.get(path, **params, **({"page_token": token} if token else {}))
            items.extend(body.get(key, []))
            token = body.get("next_page_token")
            if not token:
                return items

    def resolve(self, uri: str) -> str:
        """The artifact URI under ``uri``: ``runs:/<run>/<path>`` and
        ``models:/<logged model>`` become the ``mlflow-artifacts:/…`` they stand for."""
        if uri.startswith("runs:/"):
            run_id, _, rest = uri[len("runs:/"):].lstrip("/").partition("/")
            root = self.get("runs/get", run_id=run_id)["run"]["info"]["artifact_uri"]
            return f"{root.rstrip('/')}/{rest}".rstrip("/")
        if uri.startswith("models:/m-"):
            model_id = uri[len("models:/"):].strip("/")
            return self.get(f"logged-models/{model_id}")["model"]["info"]["artifact_uri"]
        return uri

    def list_files(self, root: str) -> list[tuple[str, int]]:
        """``(path relative to root, size)`` of every file under ``root`` (the proxy's
        path), depth first."""
        found: list[tuple[str, int]] = []
        pending = [""]
        while pending:
            inner = pending.pop()
            path = f"{root}/{inner}" if inner else root
            response = self.session.get(f"{self.url}/api/2.0/mlflow-artifacts/artifacts",
                                        params={"path": path}, timeout=self.timeout)
            if response.status_code != 200:
                raise click.ClickException(f"MLflow answered {response.status_code} listing "
                                           f"{path}: {response.text[:300]}")
            for entry in response.json().get("files", []):
                relative = f"{inner}/{entry['path']}" if inner else entry["path"]
                if entry.get("is_dir"):
                    pending.append(relative)
                else:
                    found.append((relative, int(entry.get("file_size") or 0)))
        return sorted(found)

    def download(self, path: str, target: Path) -> tuple[str, int]:
        """Stream the artifact ``path`` to ``target``: ``(sha256, size)``."""
        digest = hashlib.sha256()
        size = 0
        url = f"{self.url}/api/2.0/mlflow-artifacts/artifacts/{quote(path)}"
        with self.session.get(url, stream=True, timeout=self.timeout) as response:
            if response.status_code != 200:
                raise click.ClickException(f"MLflow answered {response.status_code} to "
                                           f"downloading {path}")
            with target.open("wb") as out:
                for block in response.iter_content(BLOCK):
                    digest.update(block)
                    size += len(block)
                    out.write(block)
        return digest.hexdigest(), size


def _tags(items: list[dict[str, Any]] | None) -> dict[str, str]:
    return {t["key"]: str(t.get("value", "")) for t in items or []}


class Importer:
    """One run of ``modelreg import mlflow``."""

    def __init__(self, source: MlflowSource, target: Client, *, dry_run: bool,
                 merge: bool, echo: Any) -> None:
        self.source = source
        self.target = target
        self.dry_run = dry_run
        self.merge = merge
        self.echo = echo
        self.report = Report()

    # -------------------------------------------------------------------- modelreg side

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.target.request(method, path, **kwargs)
        return response.json() if response.content else None

    def _model(self, name: str) -> dict[str, Any] | None:
        try:
            return self._json("GET", f"models/{quote(name, safe='')}")
        except NotFound:
            return None

    def _version(self, name: str, number: int) -> dict[str, Any] | None:
        try:
            return self._json("GET", f"models/{quote(name, safe='')}/versions/{number}")
        except NotFound:
            return None

    # ---------------------------------------------------------------------- the import

    def run(self, pattern: str) -> Report:
        """Import every registered model whose name matches ``pattern``."""
        models = [m for m in self.source.pages("registered-models/search",
                                               "registered_models", max_results=1000)
                  if fnmatch.fnmatchcase(m["name"], pattern)]
        plans = []
        for model in models:
            quote_mark = '"' if "'" in model["name"] else "'"
            versions = self.source.pages(
                "model-versions/search", "model_versions",
                filter=f"name = {quote_mark}{model['name']}{quote_mark}")
            plans.append((model, sorted(versions, key=lambda v: int(v["version"]))))
        total = sum(len(v) for _m, v in plans)
        with click.progressbar(length=max(total, 1), label="importing versions",
                               file=sys.stderr) as bar:
            for model, versions in plans:
                try:
                    self.import_model(model, versions, bar)
                except ModelregError as error:
                    self.report.failed.append(f"{model['name']}: {error.message} "
                                              f"({error.code})")
        return self.report

    def import_model(self, model: dict[str, Any], versions: list[dict[str, Any]],
                     bar: Any) -> None:
        """One model: create or merge it, its versions, then its aliases."""
        name = model["name"]
        tags = _tags(model.get("tags"))
        existing = self._model(name)
        if existing is not None and existing["tags"].get(MARKER) != self.source.url \
                and not self.merge:
            self.report.skipped.append(f"{name}: exists in modelreg and was not imported "
                                       "from this MLflow server (use --merge to merge)")
            bar.update(len(versions))
            return
        if self.dry_run:
            if existing is None:
                self.report.models += 1
        elif existing is None:
            self._json("POST", "models", json={
                "name": name, "description": model.get("description") or "",
                "tags": {**tags, MARKER: self.source.url}})
            self.report.models += 1
        else:
            self._sync_model(name, existing, model, tags)
        for version in versions:
            try:
                self.import_version(name, version)
            except ModelregError as error:
                self.report.failed.append(f"{name}/{version['version']}: {error.message} "
                                          f"({error.code})")
            bar.update(1)
        if not self.dry_run:
            self._sync_aliases(name, model)

    def _sync_model(self, name: str, existing: dict[str, Any], model: dict[str, Any],
                    tags: dict[str, str]) -> None:
        path = f"models/{quote(name, safe='')}"
        if (model.get("description") or "") != existing.get("description"):
            self._json("PATCH", path, json={"description": model.get("description") or ""})
        for key, value in {**tags, MARKER: existing["tags"].get(MARKER,
                                                                self.source.url)}.items():
            if existing["tags"].get(key) != value:
                self._json("PUT", f"{path}/tags/{quote(key, safe='')}", json={"value": value})

    def _sync_aliases(self, name: str, model: dict[str, Any]) -> None:
        path = f"models/{quote(name, safe='')}/aliases"
        current = {a["alias"]: a["version"] for a in self._json("GET", path)["aliases"]}
        for alias in model.get("aliases") or []:
            number = int(alias["version"])
            if current.get(alias["alias"]) == number:
                continue
            try:
                self._json("PUT", f"{path}/{quote(alias['alias'], safe='')}",
                           json={"version": number})
                self.report.aliases += 1
            except ModelregError as error:
                self.report.failed.append(f"{name}@{alias['alias']}: {error.message} "
                                          f"({error.code})")

    def import_version(self, name: str, version: dict[str, Any]) -> None:
        """One version: skipped when ready, else created with MLflow's number (or the
        draft an interrupted run left), its files copied, finalized."""
        number = int(version["version"])
        label = f"{name}/{number}"
        if version.get("status", "READY") != "READY":
            self.report.skipped.append(f"{label}: {version.get('status')} in MLflow")
            return
        existing = None if self.dry_run and self._model(name) is None \
            else self._version(name, number)
        if existing is not None and existing["status"] in ("ready", "validating"):
            if not self.dry_run:
                self._sync_version(name, number, existing, version)
            return
        if existing is not None and existing["status"] == "rejected":
            self.report.failed.append(f"{label}: rejected by modelreg earlier: "
                                      f"{existing.get('problems')}")
            return
        uri = self.source.resolve(self.source.get("model-versions/get-download-uri",
                                                  name=name,
                                                  version=str(number))["artifact_uri"])
        parsed = urlparse(uri)
        if parsed.scheme != "mlflow-artifacts":
            self.report.failed.append(f"{label}: its files are at {uri}, which the MLflow "
                                      "server does not serve through its artifact proxy")
            return
        root = parsed.path.strip("/")
        files = self.source.list_files(root)
        if self.dry_run:
            self.report.versions += 1
            self.report.bytes += sum(size for _p, size in files)
            return
        if existing is None:
            self._json("POST", f"/api/v1/mlflow/import/models/{quote(name, safe='')}/versions",
                       json={"number": number, "description": version.get("description"),
                             "tags": _tags(version.get("tags")),
                             "source": version.get("source"), "run_id": version.get("run_id")})
        present = {f["path"]: f["size"] for f in self._json(
            "GET", f"models/{quote(name, safe='')}/versions/{number}/files")["files"]}
        with tempfile.TemporaryDirectory(prefix="modelreg-import-") as tmp:
            for relative, size in files:
                if present.get(relative) == size:
                    continue
                local = Path(tmp) / "file"
                sha256, size = self.source.download(f"{root}/{relative}", local)
                self._upload(name, number, relative, local, sha256, size)
                self.report.bytes += size
        done = self.target.finalize_version(name, number, wait=600.0)
        if done.status != "ready":
            self.report.failed.append(f"{label}: {done.status} in modelreg: "
                                      f"{getattr(done, 'problems', '')}")
            return
        self.report.versions += 1

    def _sync_version(self, name: str, number: int, existing: dict[str, Any],
                      version: dict[str, Any]) -> None:
        path = f"models/{quote(name, safe='')}/versions/{number}"
        if (version.get("description") or "") != existing.get("description"):
            self._json("PATCH", path, json={"description": version.get("description") or ""})
        for key, value in _tags(version.get("tags")).items():
            if existing["tags"].get(key) != value:
                self._json("PUT", f"{path}/tags/{quote(key, safe='')}", json={"value": value})

    def _upload(self, name: str, number: int, path: str, local: Path, sha256: str,
                size: int) -> None:
        """One file into the draft: one ``PUT``, or an upload session in numbered parts when
        it is over the server's single-request limit."""
        target = self.target
        try:
            target.upload_file(name, number, path, local, sha256=sha256)
            return
        except ModelregError as error:
            if error.status != 413:
                raise
        part_size = 8 * BLOCK
        try:
            upload = target.open_upload(name, number, path, size=size, sha256=sha256,
                                        part_size=part_size)
        except InvalidRequest as error:
            if error.code != "invalid_part_size" or "max_part_size" not in error.details:
                raise
            part_size = min(max(part_size, error.details["min_part_size"]),
                            error.details["max_part_size"])
            upload = target.open_upload(name, number, path, size=size, sha256=sha256,
                                        part_size=part_size)
        part_size = upload.part_size or part_size
        held = {part.number for part in upload.parts}
        with local.open("rb") as stream:
            for index, start in enumerate(range(0, size, part_size), start=1):
                length = min(part_size, size - start)
                if index in held:
                    continue
                stream.seek(start)
                digest = hashlib.sha256(stream.read(length)).hexdigest()
                target.upload_part(upload.id, index, FileRegion(local, start, length),
                                   digest)
        target.complete_upload(upload.id, sha256)


@click.group("import")
def import_() -> None:
    """Import models from another registry into the modelreg server (MODELREG_URL)."""


@import_.command("mlflow")
@click.option("--from", "source_url", required=True, metavar="URL",
              help="The MLflow tracking server, e.g. http://mlflow:5000.")
@click.option("--from-token", envvar="MLFLOW_TRACKING_TOKEN", default=None,
              help="A token for the MLflow server (default: MLFLOW_TRACKING_TOKEN).")
@click.option("--from-user", envvar="MLFLOW_TRACKING_USERNAME", default=None,
              help="Basic auth's user for the MLflow server, with --from-password "
                   "(default: MLFLOW_TRACKING_USERNAME; a token wins).")
@click.option("--from-password", envvar="MLFLOW_TRACKING_PASSWORD", default=None,
              help="Basic auth's password (default: MLFLOW_TRACKING_PASSWORD).")
@click.option("--models", "pattern", default="*", show_default=True,
              help="Only the registered models whose name matches this glob.")
@click.option("--dry-run", is_flag=True, help="Report what would be copied; change nothing.")
@click.option("--merge", is_flag=True,
              help="Merge into models that exist in modelreg but were not imported from "
                   "this MLflow server (otherwise they are reported and left alone).")
def mlflow_(source_url: str, from_token: str | None, from_user: str | None,
            from_password: str | None, pattern: str, dry_run: bool, merge: bool) -> None:
    """Copy MLflow's registered models, versions (keeping their numbers), files, tags,
    descriptions and aliases into modelreg.  Rerun to copy only what is missing and to
    move aliases that moved in MLflow.  Prints a closing report (JSON on stdout)."""
    settings = load_settings()
    if not settings.url:
        raise click.ClickException("no modelreg server: set MODELREG_URL (and "
                                   "MODELREG_TOKEN, a global admin's) or run modelreg login")
    with Client(settings.url, settings.token) as target:
        source = MlflowSource(source_url, from_token, user=from_user, password=from_password)
        importer = Importer(source, target, dry_run=dry_run, merge=merge, echo=click.echo)
        report = importer.run(pattern)
    summary = report.as_json()
    verb = "would copy" if dry_run else "copied"
    click.echo(f"{verb}: {summary['models']} models, {summary['versions']} versions, "
               f"{summary['bytes']} bytes, {summary['aliases']} aliases moved; "
               f"{len(summary['skipped'])} skipped, {len(summary['failed'])} failed",
               err=True)
    for line in report.skipped:
        click.echo(f"skipped: {line}", err=True)
    for line in report.failed:
        click.echo(f"failed: {line}", err=True)
    click.echo(json.dumps(summary))
    if report.failed:
        sys.exit(1)
