"""The local cache of pulled files against a live Waitress: a file is downloaded once for
every version and destination, concurrent pulls share it, refs resolve offline, partial pulls,
pruning, ``Client.path`` and ``modelreg path``, links and their fallbacks.

Bytes downloaded are counted by the server (``modelreg_transfer_bytes_total``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from client_support import (  # noqa: F401 - fixtures
    MiB,
    model_name,
    registry,
    sent_bytes,
    start_registry,
    tree,
    write_random,
)

from modelreg_client import Client, NetworkError, NotCached, NotFound, UnwritablePath
from modelreg_client.cache import Cache
from modelreg_client.cli import main

pytestmark = pytest.mark.server


def make_model(root: Path) -> dict[str, int]:
    """A small model directory; ``{path: size}``."""
    (root / "config.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"layers": 3}))
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    (root / "tokenizer" / "merges.txt").write_text("a b\n")
    write_random(root / "weights" / "model.bin", MiB + 3)
    return {path: (root / path).stat().st_size for path in tree(root)}


@pytest.fixture
def cached(registry, tmp_path) -> Client:
    """An admin client whose cache is under tmp_path."""
    with Client(registry.url, registry.token, state_dir=tmp_path / "state",
                cache_dir=tmp_path / "cache") as client:
        yield client


def blobs(cache_root: Path) -> set[str]:
    """The sha256 of every blob under a cache root."""
    return {p.name for p in cache_root.glob("*/blobs/*/*") if len(p.name) == 64}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_is_downloaded_once_for_every_destination_and_version(
        cached, registry, model_name, tmp_path):
    source = tmp_path / "model"
    sizes = make_model(source)
    first = cached.push(source, model_name, alias="staging").version.number
    (source / "config.json").write_text(json.dumps({"layers": 4}))
    second = cached.push(source, model_name).version.number

    before = sent_bytes(registry)
    pulled = cached.pull(f"{model_name}@staging", tmp_path / "a", cache=True)
    assert sent_bytes(registry) - before == sum(sizes.values()) == pulled.downloaded_bytes
    assert pulled.version == first and tree(tmp_path / "a") == tree(source) | {
        "config.json": hashlib.sha256(json.dumps({"layers": 3}).encode()).hexdigest()}

    # Again, into another destination, and as the cached folder: nothing downloaded.
    before = sent_bytes(registry)
    again = cached.pull(f"{model_name}/{first}", tmp_path / "b", cache=True)
    folder = cached.path(f"{model_name}@staging")
    assert sent_bytes(registry) - before == 0 == again.downloaded_bytes
    assert again.downloaded_files == [] and tree(tmp_path / "b") == tree(tmp_path / "a")
    assert isinstance(folder, Path) and tree(folder) == tree(tmp_path / "a")
    assert folder == Path(again.cache_path)

    # The second version shares all but config.json: only that is downloaded.
    before = sent_bytes(registry)
    newer = cached.pull(f"{model_name}/{second}", tmp_path / "c", cache=True)
    assert newer.downloaded_files == ["config.json"]
    assert sent_bytes(registry) - before == (source / "config.json").stat().st_size
    assert tree(tmp_path / "c") == tree(source)

    # A destination holds copies, the user's to edit: an edit does not reach the cache.
    edited = tmp_path / "a" / "weights" / "model.bin"
    assert not edited.is_symlink() and edited.stat().st_nlink == 1
    edited.write_bytes(b"mine")
    assert tree(cached.path(f"{model_name}/{first}")) == tree(tmp_path / "b")


CONCURRENT_PULL = """
import sys
from modelreg_client import Client
url, token, cache, destination, ref = sys.argv[1:]
with Client(url, token, cache_dir=cache, parallel=4) as client:
    result = client.pull(ref, destination, cache=True)
print(result.downloaded_bytes)
"""


def test_concurrent_pulls_download_each_file_once(cached, registry, model_name, tmp_path):
    source = tmp_path / "model"
    for i in range(6):
        write_random(source / f"shard-{i}.bin", 2 * MiB + i)
    write_random(source / "copy" / "shard-0.bin", 0)
    (source / "copy" / "shard-0.bin").write_bytes((source / "shard-0.bin").read_bytes())
    number = cached.push(source, model_name).version.number
    distinct = sum(2 * MiB + i for i in range(6))  # the copy is one blob with shard-0

    before = sent_bytes(registry)
    runs = [subprocess.Popen(
        [sys.executable, "-c", CONCURRENT_PULL, registry.url, registry.token,
         str(tmp_path / "cache"), str(tmp_path / f"dest-{n}"), f"{model_name}/{number}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert sum(int(out) for out, _ in outputs) == distinct
    assert sent_bytes(registry) - before == distinct
    for n in range(2):
        assert tree(tmp_path / f"dest-{n}") == tree(source)
    assert len(blobs(tmp_path / "cache")) == 6
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_a_cached_alias_resolves_offline_to_what_it_last_pointed_at(tmp_path, monkeypatch):
    source = tmp_path / "model"
    make_model(source)
    cache_dir = tmp_path / "cache"
    with start_registry() as running:
        with Client(running.url, running.token, cache_dir=cache_dir,
                    state_dir=tmp_path / "state") as client:
            client.push(source, "offline-model", alias="prod")
            assert client.path("offline-model@prod").name == "1"
            (source / "config.json").write_text("{}")
            client.push(source, "offline-model", alias="prod")  # prod → 2 on the server
            # MODELREG_OFFLINE=1 never asks the server: prod is still 1 in the cache.
            env = {"MODELREG_URL": running.url, "MODELREG_TOKEN": running.token,
                   "MODELREG_CACHE": str(cache_dir), "MODELREG_OFFLINE": "1",
                   "MODELREG_CONFIG": str(tmp_path / "none.toml")}
            result = CliRunner().invoke(main, ["path", "offline-model@prod"], env=env)
            assert result.exit_code == 0 and result.output.strip().endswith(
                os.sep + "1"), result.output
            url, token = running.url, running.token
    # The server is gone.
    with Client(url, token, cache_dir=cache_dir, retries=0) as client:
        pulled = client.pull("offline-model@prod", tmp_path / "out", cache=True)
        assert pulled.version == 1 and pulled.resolved_offline
        assert pulled.downloaded_bytes == 0
        assert json.loads((tmp_path / "out" / "config.json").read_text()) == {"layers": 3}
        assert client.path("offline-model@prod", offline=True).name == "1"
        with pytest.raises(NetworkError):
            client.path("offline-model@prod", refresh=True)
        monkeypatch.setenv("MODELREG_OFFLINE", "1")  # a plain pull then uses the cache
        assert client.pull("offline-model@prod", tmp_path / "env").resolved_offline
        assert tree(tmp_path / "env") == tree(tmp_path / "out")
        monkeypatch.delenv("MODELREG_OFFLINE")
        with pytest.raises(NotCached):
            client.path("offline-model@staging", offline=True)
        with pytest.raises(NetworkError):  # never resolved: the server's failure is said
            client.path("offline-model@staging")
    env = {"MODELREG_URL": url, "MODELREG_TOKEN": token, "MODELREG_CACHE": str(cache_dir),
           "MODELREG_CONFIG": str(tmp_path / "none.toml"), "MODELREG_RETRIES": "0",
           "MODELREG_OFFLINE": None}
    result = CliRunner().invoke(main, ["pull", "offline-model@prod", str(tmp_path / "cli"),
                                       "--offline"], env=env)
    assert result.exit_code == 0, result.output
    assert "resolved from the cache" in result.output
    assert tree(tmp_path / "cli") == tree(tmp_path / "out")
    result = CliRunner().invoke(main, ["pull", "offline-model@prod", "--refresh"], env=env)
    assert result.exit_code == 6, result.output

    # Offline, only what the cache holds is found.
    for blob in cache_dir.glob("*/blobs/*/*"):
        if blob.stat().st_size == MiB + 3:
            blob.unlink()
    with Client(url, token, cache_dir=cache_dir, retries=0) as client:
        assert client.path("offline-model@prod", offline=True, paths=["config.json"])
        with pytest.raises(NotCached, match="lacks 1 file"):
            client.pull("offline-model@prod", tmp_path / "y", cache=True, offline=True)
    assert not (tmp_path / "y").exists()


def test_include_exclude_and_single_file_pulls(registry, model_name, tmp_path):
    source = tmp_path / "model"
    make_model(source)
    env = {"MODELREG_URL": registry.url, "MODELREG_TOKEN": registry.token,
           "MODELREG_CACHE": str(tmp_path / "cache"), "MODELREG_OFFLINE": None,
           "MODELREG_CONFIG": str(tmp_path / "none.toml"),
           "MODELREG_STATE_DIR": str(tmp_path / "state")}

    def run(*args: str):
        result = CliRunner().invoke(main, list(args), env=env)
        assert "Traceback" not in result.output
        return result

    assert run("push", str(source), "--model", model_name, "--alias", "dev").exit_code == 0
    before = sent_bytes(registry)
    # One file, no destination: it stays in the cache, and the command says where.
    result = run("pull", f"{model_name}@dev", "config.json")
    assert result.exit_code == 0, result.output
    folder = Path(result.output.splitlines()[0].split("the cache: ", 1)[1])
    assert tree(folder) == {"config.json": sha(source / "config.json")}
    assert sent_bytes(registry) - before == (source / "config.json").stat().st_size

    # A folder and a file, into a destination.
    result = run("pull", f"{model_name}@dev", str(tmp_path / "d1"), "tokenizer", "config.json")
    assert result.exit_code == 0, result.output
    assert set(tree(tmp_path / "d1")) == {"config.json", "tokenizer/vocab.txt",
                                          "tokenizer/merges.txt"}
    # Patterns, as push takes them.
    result = run("pull", f"{model_name}@dev", str(tmp_path / "d2"), "--include", "*.txt",
                 "--include", "*.json", "--exclude", "merges.txt")
    assert result.exit_code == 0, result.output
    assert set(tree(tmp_path / "d2")) == {"config.json", "tokenizer/vocab.txt"}
    # --dest when the destination's name is also a path of the version.
    result = run("pull", f"{model_name}@dev", "--dest", str(tmp_path / "d3"), "weights")
    assert result.exit_code == 0 and set(tree(tmp_path / "d3")) == {"weights/model.bin"}
    # Without the cache too.
    result = run("pull", f"{model_name}@dev", str(tmp_path / "d4"), "config.json",
                 "--no-cache")
    assert result.exit_code == 0 and set(tree(tmp_path / "d4")) == {"config.json"}
    # A name that is no path of the version, besides the destination.
    result = run("pull", f"{model_name}@dev", str(tmp_path / "d5"), "nothing.bin")
    assert result.exit_code == 3 and "has no file or folder 'nothing.bin'" in result.output
    assert not (tmp_path / "d5").exists()
    with Client(registry.url, registry.token, cache_dir=tmp_path / "cache") as client:
        with pytest.raises(NotFound):
            client.pull(f"{model_name}@dev", tmp_path / "d6", paths=["nothing.bin"])


def test_prune_frees_exactly_the_blobs_no_cached_version_refers_to(
        registry, model_name, tmp_path):
    source = tmp_path / "model"
    make_model(source)
    env = {"MODELREG_URL": registry.url, "MODELREG_TOKEN": registry.token,
           "MODELREG_CACHE": str(tmp_path / "cache"), "MODELREG_OFFLINE": None,
           "MODELREG_CONFIG": str(tmp_path / "none.toml"),
           "MODELREG_STATE_DIR": str(tmp_path / "state")}

    def run(*args: str):
        return CliRunner().invoke(main, list(args), env=env)

    assert run("push", str(source), "--model", model_name).exit_code == 0
    only_first = {sha(source / "config.json"), sha(source / "tokenizer" / "merges.txt")}
    freed = sum((source / p).stat().st_size for p in ("config.json", "tokenizer/merges.txt"))
    (source / "config.json").write_text("{}")
    (source / "tokenizer" / "merges.txt").unlink()
    assert run("push", str(source), "--model", model_name).exit_code == 0
    for number in (1, 2):
        assert run("path", f"{model_name}/{number}").exit_code == 0
    listed = run("cache", "ls")
    assert listed.exit_code == 0 and listed.output.splitlines()[0].startswith("VERSION")
    assert f"{model_name}/1" in listed.output and f"{model_name}/2" in listed.output
    everything = blobs(tmp_path / "cache")
    assert len(everything) == 5

    # Nothing unreferenced yet.
    result = run("cache", "prune")
    assert result.exit_code == 0 and "removed 0 file(s), freed 0 B" in result.output
    assert run("cache", "rm", f"{model_name}/1").exit_code == 0
    result = run("cache", "prune", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert set(answer["removed_blobs"]) == only_first and answer["freed_bytes"] == freed
    assert blobs(tmp_path / "cache") == everything - only_first
    assert tree(Path(run("path", f"{model_name}/2", "--offline").output.strip())) == \
        tree(source)

    result = run("cache", "prune", "--all")
    assert result.exit_code == 0 and "removed 1 cached version(s)" in result.output
    assert blobs(tmp_path / "cache") == set()
    assert json.loads(run("cache", "ls", "--json").output) == []


@pytest.mark.parametrize("refused", [("symlink",), ("symlink", "link")])
def test_links_fall_back_to_hard_links_then_copies(refused, cached, registry, model_name,
                                                   tmp_path, monkeypatch):
    source = tmp_path / "model"
    make_model(source)
    number = cached.push(source, model_name).version.number

    def refuse(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    for name in refused:
        monkeypatch.setattr(os, name, refuse)
    folder = cached.path(f"{model_name}/{number}")
    assert tree(folder) == tree(source)
    weights = folder / "weights" / "model.bin"
    blob = cached.cache.blob(sha(source / "weights" / "model.bin"))
    assert not weights.is_symlink()
    assert os.path.samefile(weights, blob) == (refused == ("symlink",))
    assert cached.cache.link_mode() == ("hardlink" if len(refused) == 1 else "copy")
    before = sent_bytes(registry)
    assert cached.path(f"{model_name}/{number}") == folder
    assert cached.pull(f"{model_name}/{number}", tmp_path / "out", cache=True).downloaded_bytes \
        == 0 == sent_bytes(registry) - before
    assert tree(tmp_path / "out") == tree(source)


def test_links_are_symbolic_where_allowed_and_unwritable_paths_write_nothing(
        cached, model_name, tmp_path):
    source = tmp_path / "model"
    make_model(source)
    number = cached.push(source, model_name).version.number
    folder = cached.path(f"{model_name}/{number}")
    assert (folder / "config.json").is_symlink()
    assert Cache(tmp_path / "cache", cached.url).link_mode() == "symlink"
    destination = tmp_path / "dest"
    destination.mkdir()
    (destination / "tokenizer").write_text("mine")  # a file where a folder is needed
    with pytest.raises(UnwritablePath):
        cached.pull(f"{model_name}/{number}", destination, cache=True)
    assert [p.name for p in destination.iterdir()] == ["tokenizer"]


def test_threads_pulling_overlapping_versions_share_each_download(
        cached, registry, model_name, tmp_path):
    import threading

    source = tmp_path / "model"
    for i in range(4):
        write_random(source / f"shard-{i}.bin", MiB + i)
    first = cached.push(source, model_name).version.number
    write_random(source / "extra.bin", MiB + 9)
    second = cached.push(source, model_name).version.number
    distinct = sum(MiB + i for i in range(4)) + MiB + 9
    before = sent_bytes(registry)
    failures: list[BaseException] = []

    def pull(number: int) -> None:
        try:
            with Client(registry.url, registry.token, cache_dir=tmp_path / "cache") as own:
                own.path(f"{model_name}/{number}")
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=pull, args=(n,)) for n in (first, second, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures
    assert sent_bytes(registry) - before == distinct
    assert tree(cached.path(f"{model_name}/{second}", offline=True)) == tree(source)


def test_polling_an_alias_revalidates_with_its_etag(cached, registry, model_name, tmp_path):
    """``Client.resolve`` of an alias the cache resolved before asks with ``If-None-Match``:
    the server's ``304`` keeps the cached resolution, and a moved alias is seen at once."""
    source = tmp_path / "model"
    make_model(source)
    cached.push(source, model_name, alias="prod")
    answers: list[tuple[int, str | None, str | None]] = []

    def record(response, *args, **kwargs):
        if response.request.path_url.endswith("/files"):
            answers.append((response.status_code, response.request.headers.get("If-None-Match"),
                            response.headers.get("ETag")))

    cached._session.hooks["response"].append(record)
    first = cached.resolve(f"{model_name}@prod")
    assert first.version == 1
    status, sent, etag = answers[-1]
    assert (status, sent) == (200, None) and etag
    record_file = next((tmp_path / "cache").glob(f"*/models/{model_name}/refs/prod.json"))
    assert json.loads(record_file.read_text())["etag"] == etag

    again = cached.resolve(f"{model_name}@prod")
    assert answers[-1] == (304, etag, etag)
    assert again == first

    (source / "config.json").write_text("{}")
    cached.push(source, model_name, alias="prod")  # prod → 2
    moved = cached.resolve(f"{model_name}@prod")
    status, sent, new_etag = answers[-1]
    assert (status, sent, moved.version) == (200, etag, 2) and new_etag != etag
    assert cached.resolve(f"{model_name}@prod") == moved
    assert answers[-1] == (304, new_etag, new_etag)
    # The cache lost the version's listing: asked without a condition, answered in full.
    for manifest in (tmp_path / "cache").glob(f"*/models/{model_name}/manifests/2.json"):
        manifest.unlink()
    assert cached.resolve(f"{model_name}@prod") == moved
    assert answers[-1][:2] == (200, None)
