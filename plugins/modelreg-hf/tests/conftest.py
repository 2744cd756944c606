"""Fixtures of the modelreg-hf tests: one registry served by a real Waitress (``pserve``,
plugins from entry points, the worker embedded so that scans conclude), on PostgreSQL,
with principals and tokens made by the ``modelreg`` commands; and a runner of
``huggingface_hub`` scripts in subprocesses (the client reads ``HF_ENDPOINT``,
``HF_HUB_OFFLINE`` and ``HF_HUB_DISABLE_XET`` when it is imported)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelreg.testing import TestDatabase, unavailable
from modelreg.testing.server import LiveServer

MODELREG = str(Path(sys.executable).parent / "modelreg")
#: The single-request limit of an LFS upload in these tests (larger files go in parts).
PART_SIZE = 64 * 1024
CONFIG = {"model_type": "bert", "hidden_size": 32, "num_attention_heads": 2,
          "num_hidden_layers": 1, "intermediate_size": 37, "vocab_size": 99}


def _command(*args: str) -> str:
    result = subprocess.run([MODELREG, *args], capture_output=True, text=True,  # noqa: S603
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _token(output: str) -> str:
    return next(word for word in output.split() if word.startswith("mr_"))


@dataclass
class Hub:
    """The live registry, its tokens, and a runner of client scripts."""

    url: str
    tokens: dict[str, str]
    home: Path
    server: LiveServer
    runs: list[float] = field(default_factory=list)

    def rest(self, method: str, path: str, body: Any = None, who: str = "admin") -> Any:
        """A call to the registry's REST API (``/api/v1``) as the principal of the token ``who``."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (the test server's http URL)
            self.url + "/api/v1" + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.tokens[who]}",
                     "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None

    def run(self, script: str, *, who: str | None = "admin", offline: bool = False,
            xet: bool = False, home: Path | None = None,
            args: dict[str, Any] | None = None) -> Any:
        """Run ``script`` with the real client; what it printed last, parsed as JSON.

        ``HF_HOME`` is the test's own cache; ``HF_TOKEN`` the token ``who``; Xet disabled
        unless ``xet``; ``args`` reach the script as ``args``.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env.update(HF_ENDPOINT=self.url, HF_HOME=str(home or self.home),
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
                   TRANSFORMERS_NO_ADVISORY_WARNINGS="1", HF_HUB_ETAG_TIMEOUT="30",
                   HF_HUB_DOWNLOAD_TIMEOUT="60", TEST_ARGS=json.dumps(args or {}))
        if who is not None:
            env["HF_TOKEN"] = self.tokens[who]
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        if not xet:
            env["HF_HUB_DISABLE_XET"] = "1"
        prelude = textwrap.dedent("""\
            import json, os, sys, hashlib, pathlib
            out = {}
            args = json.loads(os.environ["TEST_ARGS"])
            def fails(call):
                try:
                    call()
                except Exception as exc:
                    status = getattr(getattr(exc, "response", None), "status_code", None)
                    kinds = [kind.__name__ for kind in type(exc).__mro__]
                    return {"kinds": kinds, "status": status, "message": str(exc)[:1500]}
                return None
            """)
        code = prelude + textwrap.dedent(script) + "\nprint(json.dumps(out))\n"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True,  # noqa: S603
                                text=True, timeout=300, env=env)
        assert result.returncode == 0, (result.stderr[-6000:] + "\n--- server log ---\n"
                                        + self.server.log_tail())
        return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def hub_class() -> type[Hub]:
    """:class:`Hub`, for a test that runs a server of its own."""
    return Hub


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A registry with no anonymous access; principals ``root`` (admin), ``reader`` (read on
    ``shared-*`` only); tokens ``admin``, ``readonly`` (root, read scope), ``reader``,
    ``bad`` (well-formed, unknown)."""
    try:
        db = TestDatabase.create("postgresql", migrate=False)
    except ConnectionError as exc:
        unavailable(str(exc))
    directory = tmp_path_factory.mktemp("hf-registry")
    settings = {
        "sqlalchemy.url": db.url,
        "retry.attempts": "3",
        "modelreg.storage.local.path": str(directory / "blobs"),
        "modelreg.auth.anonymous": "none",
        "modelreg.worker.embedded": "true",
        "modelreg.worker.poll_interval": "0.2",
        "modelreg.hf.part_size": str(PART_SIZE),
        "modelreg.hf.commit_wait": "60",
        "modelreg.hf.hold_grace": "5",
        "modelreg.hf.upload_secret": "a-test-secret-of-enough-length",
    }
    ini = directory / "registry.ini"
    lines = ["[app:main]", "use = egg:modelreg"]
    lines += [f"{k} = {str(v).replace('%', '%%')}" for k, v in settings.items()]
    ini.write_text("\n".join(lines) + "\n")
    try:
        _command("db", "upgrade", str(ini))
        _command("users", "add", "root", str(ini), "--admin")
        _command("users", "add", "reader", str(ini))
        _command("grants", "add", "reader", "shared-*", "read", str(ini))
        tokens = {
            "admin": _token(_command("tokens", "create", "root", str(ini), "--scope", "admin")),
            "readonly": _token(_command("tokens", "create", "root", str(ini),
                                        "--scope", "read")),
            "reader": _token(_command("tokens", "create", "reader", str(ini))),
            "bad": "mr_" + "0" * 16 + "_" + "x" * 40,
        }
        with LiveServer(settings, threads=8) as server:
            yield Hub(server.url, tokens, tmp_path_factory.mktemp("hf-home"), server)
    finally:
        db.drop()


def safetensors(values: int) -> bytes:
    """A valid safetensors file with one F32 tensor of ``values`` numbers."""
    header = json.dumps({"weight": {"dtype": "F32", "shape": [values],
                                    "data_offsets": [0, 4 * values]},
                         "__metadata__": {"format": "pt"}}).encode()
    return (struct.pack("<Q", len(header)) + header
            + struct.pack(f"<{values}f", *(float(i % 251) for i in range(values))))


def first_folder(tmp: Path) -> dict[str, bytes]:
    files = {
        "config.json": json.dumps(CONFIG).encode(),
        "model.safetensors": safetensors(50_000),  # 200 kB: four parts of 64 KiB
        "sub/tokenizer_config.json": b'{"do_lower_case": true}',
        "notes/old.txt": b"to be deleted",
        "empty.txt": b"",
    }
    for path, data in files.items():
        (tmp / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp / path).write_bytes(data)
    return files


@pytest.fixture(scope="session")
def pushed(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``fraud-detector`` pushed with the client: upload_folder, upload_file, delete_file;
    the alias ``champion`` set on version 1 through the REST API; ``acme/tiny`` too."""
    folder = tmp_path_factory.mktemp("v1")
    files = first_folder(folder)
    assert len(files["model.safetensors"]) > 3 * PART_SIZE
    out = hub.run("""
        from huggingface_hub import HfApi
        api = HfApi()
        out["whoami"] = api.whoami()["name"]
        out["repo"] = str(api.create_repo("fraud-detector"))
        out["again"] = str(api.create_repo("fraud-detector", exist_ok=True))
        out["exists"] = fails(lambda: api.create_repo("fraud-detector"))
        out["c1"] = api.upload_folder(folder_path=args["folder"], repo_id="fraud-detector",
                                      commit_message="first weights").oid
        out["files1"] = sorted(api.list_repo_files("fraud-detector"))
        out["c2"] = api.upload_file(path_or_fileobj=b"# Fraud detector\\n",
                                    path_in_repo="README.md", repo_id="fraud-detector",
                                    commit_message="a model card").oid
        out["files2"] = sorted(api.list_repo_files("fraud-detector"))
        out["c3"] = api.delete_file("notes/old.txt", repo_id="fraud-detector",
                                    commit_message="drop the notes").oid
        out["files3"] = sorted(api.list_repo_files("fraud-detector"))
        out["stale"] = fails(lambda: api.upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="fraud-detector",
            parent_commit=out["c1"]))
        out["missing"] = fails(lambda: api.delete_file("nothing.txt", repo_id="fraud-detector"))
        out["org"] = str(api.create_repo("acme/tiny"))
        out["org_commit"] = api.upload_file(path_or_fileobj=b'{"a": 1}',
                                            path_in_repo="config.json", repo_id="acme/tiny").oid
        """, args={"folder": str(folder)})
    hub.rest("PUT", "/models/fraud-detector/aliases/champion", {"version": 1})
    return {"files": files, "out": out}
