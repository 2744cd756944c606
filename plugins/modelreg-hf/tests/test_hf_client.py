"""The real ``huggingface_hub`` and ``transformers`` against modelreg-hf on a live Waitress.

The scenarios run in order on one registry (the session's, conftest.py): a push with
``upload_folder`` (a file above the single-request limit goes in parts), more commits, then
downloads by
alias, number, commit id and without a revision, the offline cache, ``AutoConfig``, every
error the client raises, tokens, a scan rejection and the Xet refusal.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelreg.testing.server import LiveServer

pytest.importorskip("huggingface_hub")
pytest.importorskip("transformers")

MODEL = "fraud-detector"
Hub = Any
CONFIG_SMALL = {"model_type": "bert", "hidden_size": 16, "num_attention_heads": 2,
                "num_hidden_layers": 1, "intermediate_size": 8, "vocab_size": 10}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_push_makes_incremental_versions_with_commit_ids(hub: Hub,
                                                           pushed: dict[str, Any]) -> None:
    out, files = pushed["out"], pushed["files"]
    assert out["whoami"] == "root"
    # the client parses only namespaced repo URLs: plain names are in the namespace modelreg
    assert out["repo"] == f"{hub.url}/modelreg/{MODEL}" and out["again"] == out["repo"]
    assert out["exists"]["status"] == 409
    for key in ("c1", "c2", "c3"):
        assert len(out[key]) == 40 and out[key] == out[key].lower()
    assert len({out["c1"], out["c2"], out["c3"]}) == 3
    assert out["files1"] == sorted(files)
    # upload_file keeps the other files; delete_file removes exactly one
    assert out["files2"] == sorted([*files, "README.md"])
    assert out["files3"] == sorted(p for p in [*files, "README.md"] if p != "notes/old.txt")
    assert out["stale"]["status"] == 412 and "HfHubHTTPError" in out["stale"]["kinds"]
    assert "EntryNotFoundError" in out["missing"]["kinds"]
    assert out["org"] == f"{hub.url}/acme/tiny" and len(out["org_commit"]) == 40
    # what the registry holds: versions 1-3, each commit's message in its metadata, the
    # commit id the first 40 hex digits of the manifest digest
    versions = {v["number"]: v for v in hub.rest("GET", f"/models/{MODEL}/versions")["versions"]}
    assert sorted(versions) == [1, 2, 3]
    first = hub.rest("GET", f"/models/{MODEL}/versions/1")
    assert first["metadata"]["huggingface"]["commit"]["message"] == "first weights"
    assert first["digest"].removeprefix("sha256:")[:40] == out["c1"]
    second = hub.rest("GET", f"/models/{MODEL}/versions/2")
    assert second["metadata"]["huggingface"]["commit"]["parent"] == out["c1"]
    stored = {f["path"]: f for f in hub.rest("GET", f"/models/{MODEL}/versions/1/files")["files"]}
    for path, data in files.items():
        assert stored[path]["size"] == len(data)
        assert stored[path]["sha256"] == sha(data)
    assert "acme--tiny" in {m["name"] for m in hub.rest("GET", "/models")["models"]}
    # the audit log has what the client did, by the token's principal
    events = hub.rest("GET", f"/audit?model={MODEL}&page_size=200")["events"]
    done = {(e["action"], e["actor"]) for e in events}
    assert {("model.created", "root"), ("version.created", "root")} <= done, done


def test_downloads_by_alias_number_commit_and_main_then_offline(
        hub: Hub, pushed: dict[str, Any], tmp_path: Path) -> None:
    files, commits = pushed["files"], pushed["out"]
    home = tmp_path / "hf-home"
    out = hub.run("""
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        api = HfApi()
        def digest(path):
            return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
        out["alias"] = digest(hf_hub_download("fraud-detector", "config.json",
                                              revision="champion"))
        out["number"] = digest(hf_hub_download("fraud-detector", "README.md", revision="2"))
        out["main"] = digest(hf_hub_download("fraud-detector", "README.md"))
        out["sub"] = digest(hf_hub_download("fraud-detector", "tokenizer_config.json",
                                            subfolder="sub", revision="champion"))
        snap = pathlib.Path(snapshot_download("fraud-detector", revision="champion"))
        out["snapshot"] = {p.relative_to(snap).as_posix(): digest(p)
                           for p in snap.rglob("*") if p.is_file()}
        info = api.model_info("fraud-detector", revision="champion", files_metadata=True)
        out["sha"] = info.sha
        out["siblings"] = {s.rfilename: [s.size, s.lfs.sha256] for s in info.siblings}
        out["main_sha"] = api.model_info("fraud-detector").sha
        out["by_commit"] = digest(hf_hub_download("fraud-detector", "config.json",
                                                  revision=info.sha))
        out["files"] = sorted(api.list_repo_files("fraud-detector", revision="champion"))
        refs = api.list_repo_refs("fraud-detector")
        out["branches"] = {b.name: b.target_commit for b in refs.branches}
        out["commits"] = [[c.commit_id, c.title] for c in api.list_repo_commits(
            "fraud-detector")]
        out["paths"] = sorted((p.path, type(p).__name__) for p in api.get_paths_info(
            "fraud-detector", ["config.json", "sub", "nothing.txt"], revision="champion"))
        out["org"] = json.loads(pathlib.Path(hf_hub_download("acme/tiny",
                                                             "config.json")).read_text())
        out["namespaced"] = digest(hf_hub_download("modelreg/fraud-detector", "config.json",
                                                   revision="champion"))
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained("fraud-detector", revision="champion")
        out["config"] = [config.model_type, config.hidden_size]
        out["no_repo"] = fails(lambda: hf_hub_download("no-such-model", "config.json"))
        out["no_rev"] = fails(lambda: hf_hub_download("fraud-detector", "config.json",
                                                      revision="nope"))
        out["no_entry"] = fails(lambda: hf_hub_download("fraud-detector", "missing.json",
                                                        revision="champion"))
        out["info_no_repo"] = fails(lambda: api.model_info("no-such-model"))
        out["info_no_rev"] = fails(lambda: api.model_info("fraud-detector", revision="99"))
        """, home=home)
    assert out["alias"] == sha(files["config.json"])
    assert out["number"] == out["main"] == sha(b"# Fraud detector\n")
    assert out["sub"] == sha(files["sub/tokenizer_config.json"])
    assert out["snapshot"] == {path: sha(data) for path, data in files.items()}
    assert out["sha"] == commits["c1"] and out["main_sha"] == commits["c3"]
    assert out["siblings"]["model.safetensors"] == [len(files["model.safetensors"]),
                                                    sha(files["model.safetensors"])]
    assert out["by_commit"] == sha(files["config.json"])
    assert out["files"] == sorted(files)
    assert out["branches"] == {"main": commits["c3"], "champion": commits["c1"]}
    assert out["commits"] == [[commits["c3"], "drop the notes"],
                              [commits["c2"], "a model card"],
                              [commits["c1"], "first weights"]]
    assert out["paths"] == [["config.json", "RepoFile"], ["sub", "RepoFolder"]]
    assert out["org"] == {"a": 1}
    assert out["namespaced"] == sha(files["config.json"])
    assert out["config"] == ["bert", 32]
    assert "RepositoryNotFoundError" in out["no_repo"]["kinds"]
    assert "RevisionNotFoundError" in out["no_rev"]["kinds"]
    assert "EntryNotFoundError" in out["no_entry"]["kinds"]
    assert "RepositoryNotFoundError" in out["info_no_repo"]["kinds"]
    assert "RevisionNotFoundError" in out["info_no_rev"]["kinds"]

    offline = hub.run("""
        from huggingface_hub import hf_hub_download, snapshot_download
        from transformers import AutoConfig
        path = hf_hub_download("fraud-detector", "config.json", revision="champion")
        out["config"] = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
        snap = pathlib.Path(snapshot_download("fraud-detector", revision="champion"))
        out["snapshot"] = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*")
                                 if p.is_file())
        out["auto"] = AutoConfig.from_pretrained("fraud-detector",
                                                 revision="champion").hidden_size
        out["uncached"] = fails(lambda: hf_hub_download("fraud-detector", "config.json",
                                                        revision="3"))
        """, home=home, offline=True)
    assert offline["config"] == sha(files["config.json"])
    assert offline["snapshot"] == sorted(files)
    assert offline["auto"] == 32
    assert "LocalEntryNotFoundError" in offline["uncached"]["kinds"]


def test_tokens_missing_refused_insufficient_or_without_grant(hub: Hub, pushed: dict[str, Any],
                                                              tmp_path: Path) -> None:
    script = """
        from huggingface_hub import HfApi, hf_hub_download
        api = HfApi()
        out["info"] = fails(lambda: api.model_info("fraud-detector"))
        out["download"] = fails(lambda: hf_hub_download("fraud-detector", "config.json"))
        out["upload"] = fails(lambda: api.upload_file(path_or_fileobj=b"x",
                                                      path_in_repo="x.txt",
                                                      repo_id="fraud-detector"))
        """
    anonymous = hub.run(script, who=None, home=tmp_path / "a")
    refused = hub.run(script, who="bad", home=tmp_path / "b")
    reader = hub.run(script, who="reader", home=tmp_path / "c")
    readonly = hub.run(script, who="readonly", home=tmp_path / "d")
    for out in (anonymous, reader):  # nobody learns whether the model exists
        assert "RepositoryNotFoundError" in out["info"]["kinds"], out
        assert "RepositoryNotFoundError" in out["download"]["kinds"]
        assert "RepositoryNotFoundError" in out["upload"]["kinds"]
    assert anonymous["info"]["status"] == 401 and reader["info"]["status"] == 404
    for key in ("info", "download", "upload"):
        assert refused[key]["status"] == 401, refused[key]
        assert "RepositoryNotFoundError" not in refused[key]["kinds"]
        assert "Invalid credentials" in refused[key]["message"]
    assert readonly["info"] is None and readonly["download"] is None  # it reads...
    assert readonly["upload"]["status"] == 403  # ...and may not write
    assert "HfHubHTTPError" in readonly["upload"]["kinds"]
    assert max(v["number"] for v in hub.rest("GET", f"/models/{MODEL}/versions")["versions"]) == 3


def test_a_commit_the_scan_rejects_is_an_error_and_main_stays(hub: Hub,
                                                               pushed: dict[str, Any]) -> None:
    # a Trainer-style training_args.bin that would run a command if unpickled: never loaded
    argument = b"echo pwned"
    evil = (b"\x80\x02" + b"cos\nsystem\n" + b"X" + struct.pack("<I", len(argument))
            + argument + b"\x85R.")
    out = hub.run("""
        from huggingface_hub import HfApi
        api = HfApi()
        out["rejected"] = fails(lambda: api.upload_file(
            path_or_fileobj=bytes.fromhex(args["evil"]), path_in_repo="training_args.bin",
            repo_id="fraud-detector", commit_message="trainer output"))
        out["main"] = api.model_info("fraud-detector").sha
        """, args={"evil": evil.hex()})
    assert out["rejected"]["status"] == 422, out["rejected"]
    assert "rejected" in out["rejected"]["message"]
    assert "training_args.bin" in out["rejected"]["message"]
    assert out["main"] == pushed["out"]["c3"]
    rejected = hub.rest("GET", f"/models/{MODEL}/versions/4")
    assert rejected["status"] == "rejected"
    assert rejected["metadata"]["huggingface"]["commit"]["message"] == "trainer output"


def test_an_upload_through_xet_is_refused_with_the_way_out(hub: Hub,
                                                           pushed: dict[str, Any]) -> None:
    out = hub.run("""
        from huggingface_hub import HfApi
        out["xet"] = fails(lambda: HfApi().upload_file(
            path_or_fileobj=b"some bytes", path_in_repo="xet.txt", repo_id="fraud-detector"))
        """, xet=True)
    # hf_xet shows the status and the URL, not the answer's message (which says to set
    # HF_HUB_DISABLE_XET=1: test_hf_protocol.py); nothing is committed
    assert out["xet"] is not None
    assert "501" in out["xet"]["message"] and "xet-write-token" in out["xet"]["message"]
    versions = hub.rest("GET", f"/models/{MODEL}/versions")["versions"]
    assert "xet.txt" not in {f["path"] for f in hub.rest(
        "GET", f"/models/{MODEL}/versions/{max(v['number'] for v in versions)}/files")["files"]}


def test_a_commit_to_a_branch_builds_on_its_alias_and_moves_it(hub: Hub,
                                                                pushed: dict[str, Any]) -> None:
    commits, files = pushed["out"], pushed["files"]
    hub.rest("PUT", f"/models/{MODEL}/aliases/candidate", {"version": 2})
    out = hub.run("""
        from huggingface_hub import HfApi
        api = HfApi()
        out["commit"] = api.upload_file(path_or_fileobj=b"tuned", path_in_repo="tuned.txt",
                                        repo_id="fraud-detector", revision="candidate",
                                        commit_message="tuned").oid
        out["files"] = sorted(api.list_repo_files("fraud-detector", revision="candidate"))
        out["branches"] = {b.name: b.target_commit
                           for b in api.list_repo_refs("fraud-detector").branches}
        out["unknown"] = fails(lambda: api.upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="fraud-detector",
            revision="nope"))
        """)
    # version 2's files (all of version 1's and the card) and the new one
    assert out["files"] == sorted([*files, "README.md", "tuned.txt"])
    assert out["branches"]["candidate"] == out["commit"]
    assert out["branches"]["champion"] == commits["c1"]
    # with no alias named main, main is the newest ready version, whichever branch made it
    assert out["branches"]["main"] == out["commit"]
    assert "RevisionNotFoundError" in out["unknown"]["kinds"]
    alias = hub.rest("GET", f"/models/{MODEL}/aliases/candidate")
    assert alias["version"] == 5  # 3 the last on main, 4 rejected


def upgrade(tmp_path: Path, url: str) -> None:
    """``modelreg db upgrade`` on ``url``, as an operator runs it (every installed plugin's
    migrations with the core's)."""
    ini = tmp_path / "upgrade.ini"
    ini.write_text(f"[app:main]\nuse = egg:modelreg\nsqlalchemy.url = {url}\n")
    command = [str(Path(sys.executable).parent / "modelreg"), "db", "upgrade", str(ini)]
    result = subprocess.run(command, capture_output=True, text=True,  # noqa: S603
                            timeout=180)
    assert result.returncode == 0, result.stderr


def test_pserve_development_ini_serves_a_push_and_a_load(tmp_path: Path,
                                                         hub_class: type) -> None:
    """development.ini as shipped (SQLite, the embedded worker scanning, anonymous writes),
    only its files moved to ``tmp_path``: push with upload_folder, load by alias."""
    parser = configparser.ConfigParser(defaults={"here": str(tmp_path)})
    parser.read(Path(__file__).parents[3] / "development.ini", encoding="utf-8")
    settings = {k: v for k, v in parser.items("app:main") if k not in ("here", "use")}
    (tmp_path / "var").mkdir()
    upgrade(tmp_path, settings["sqlalchemy.url"])
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG_SMALL))
    (folder / "README.md").write_text("# a model pushed to development.ini\n")
    with LiveServer(settings, threads=4) as server:
        hub = hub_class(server.url, {}, tmp_path / "home", server)
        out = hub.run("""
            from huggingface_hub import HfApi
            from transformers import AutoConfig
            api = HfApi()
            api.create_repo("dev-model")
            out["commit"] = api.upload_folder(folder_path=args["folder"],
                                              repo_id="dev-model").oid
            out["hidden"] = AutoConfig.from_pretrained("dev-model",
                                                       revision=out["commit"]).hidden_size
            """, who=None, args={"folder": str(folder)})
    assert len(out["commit"]) == 40 and out["hidden"] == CONFIG_SMALL["hidden_size"]


def test_with_s3_downloads_redirect_and_parts_join_in_the_bucket(
        tmp_path: Path, hub_class: type, modelreg_s3_server: Any) -> None:
    """Blobs in S3 (moto's server) with presigned downloads: a resolve answers a redirect
    that carries the file's metadata (the client follows it without the token), and a file
    above the single-request limit is joined from parts read back from the bucket."""
    settings = {
        "sqlalchemy.url": f"sqlite:///{tmp_path / 'registry.sqlite'}",
        "modelreg.auth.anonymous": "write",
        "modelreg.worker.embedded": "true",
        "modelreg.worker.poll_interval": "0.2",
        "modelreg.hf.part_size": "65536",
        "modelreg.storage.s3.presigned_downloads": "true",
        **modelreg_s3_server.settings(),
    }
    upgrade(tmp_path, settings["sqlalchemy.url"])
    folder = tmp_path / "out"
    folder.mkdir()
    files = {"config.json": json.dumps(CONFIG_SMALL).encode(),
             "weights.bin.txt": bytes(range(256)) * 800}  # 204,800 bytes: four parts
    for path, data in files.items():
        (folder / path).write_bytes(data)
    with LiveServer(settings, threads=4) as server:
        hub = hub_class(server.url, {}, tmp_path / "home", server)
        out = hub.run("""
            from huggingface_hub import HfApi, snapshot_download
            from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url
            api = HfApi()
            api.create_repo("s3-model")
            out["commit"] = api.upload_folder(folder_path=args["folder"],
                                              repo_id="s3-model").oid
            meta = get_hf_file_metadata(hf_hub_url("s3-model", "weights.bin.txt"))
            out["meta"] = [meta.commit_hash, meta.etag, meta.size,
                           meta.location.startswith(args["endpoint"])]
            snap = pathlib.Path(snapshot_download("s3-model"))
            out["files"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                            for p in snap.iterdir()}
            """, who=None, args={"folder": str(folder),
                                 "endpoint": modelreg_s3_server.endpoint})
    data = files["weights.bin.txt"]
    assert out["meta"] == [out["commit"], sha(data), len(data), True]
    assert out["files"] == {path: sha(data) for path, data in files.items()}
