"""The ``modelreg`` command's client subcommands: through click's CliRunner and through the
installed console script, against a live Waitress.  Every run keeps its config and state in
the test's temporary directory (``MODELREG_CONFIG``, ``MODELREG_STATE_DIR``), never $HOME."""

from __future__ import annotations

import http.server
import io
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from client_support import (  # noqa: F401 - fixtures
    MiB,
    registry,
    start_registry,
    tree,
    write_random,
)

from modelreg.testing.server import free_port
from modelreg_client import Client
from modelreg_client.cli import EXIT_CODES, BarProgress, main

pytestmark = pytest.mark.server


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    """Environment of a run: config, state and cache under tmp_path, no server from
    outside."""
    return {
        "MODELREG_CONFIG": str(tmp_path / "config" / "config.toml"),
        "MODELREG_STATE_DIR": str(tmp_path / "state"),
        "MODELREG_URL": None,
        "MODELREG_TOKEN": None,
        "MODELREG_RETRIES": "1",
        "MODELREG_CACHE": str(tmp_path / "cache"),
        "MODELREG_OFFLINE": None,
    }


@pytest.fixture
def run(env):
    """``run(*args, input=None)`` → the CliRunner result; never a traceback."""

    def invoke(*args: str, input: str | None = None):
        result = CliRunner().invoke(main, list(args), env=env, input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert "Traceback" not in result.output
        return result

    return invoke


@pytest.fixture
def logged_in(run, registry, env):
    result = run("login", registry.url, "--token", registry.token)
    assert result.exit_code == 0, result.output
    return run


def test_login_checks_and_stores_url_and_token_privately(run, registry, env):
    config = Path(env["MODELREG_CONFIG"])
    refused = run("login", registry.url, "--token", "mr_wrong_token")
    assert refused.exit_code == 4 and "Error:" in refused.output
    assert not config.exists()
    result = run("login", registry.url, input=registry.token + "\n")
    assert result.exit_code == 0, result.output
    assert registry.token not in result.output  # the prompt hides it
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    assert registry.url in text and registry.token in text
    assert run("ls").exit_code == 0
    # The environment overrides the file.
    env["MODELREG_TOKEN"] = "mr_from_the_environment"
    assert run("ls").exit_code == 4


def test_push_verbose_lists_what_the_ignore_rules_left_out(logged_in, tmp_path):
    run = logged_in
    model = f"ign-{tmp_path.name[-12:].lower().strip('_')}".replace("_", "-")
    source = tmp_path / "model"
    (source / ".git").mkdir(parents=True)
    (source / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (source / "config.json").write_text('{"layers": 2}')
    (source / "train.log").write_text("epoch 1\n")
    result = run("push", str(source), "--model", model, "--exclude", "*.log", "--verbose")
    assert result.exit_code == 0, result.output
    assert "1 uploaded" in result.output and "2 left out" in result.output
    assert "left out .git/" in result.output and "left out train.log" in result.output
    listing = run("ls", f"{model}/1")
    assert "config.json" in listing.output and "train.log" not in listing.output


def test_push_pull_and_the_metadata_commands(logged_in, tmp_path):
    run = logged_in
    model = f"cli-{tmp_path.name[-12:].lower().strip('_')}".replace("_", "-")
    source = tmp_path / "model"
    write_random(source / "weights" / "model.bin", 3 * MiB)
    (source / "config.json").write_text('{"layers": 2}')
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"framework": "torch", "metrics": {"auc": 0.9}}))

    result = run("push", str(source), "--model", model, "--tag", "run=42", "--metadata",
                 str(meta), "--alias", "staging", "--json")
    assert result.exit_code == 0, result.output
    pushed = json.loads(result.output)
    assert pushed["version"]["status"] == "ready" and pushed["existing"] is False
    assert pushed["digest"] == pushed["version"]["digest"]
    assert pushed["version"]["tags"] == {"run": "42"}
    assert pushed["version"]["aliases"] == ["staging"]

    again = run("push", str(source), "--model", model, "--metadata", str(meta))
    assert again.exit_code == 0 and "nothing uploaded" in again.output
    assert pushed["digest"] in again.output

    destination = tmp_path / "pulled"
    result = run("pull", f"{model}@staging", str(destination))
    assert result.exit_code == 0, result.output
    assert "pulled" in result.output and tree(destination) == tree(source)
    result = run("pull", f"{model}/1", str(tmp_path / "again"), "--json")
    assert json.loads(result.output)["digest"] == pushed["digest"]

    assert model in run("ls").output
    versions = json.loads(run("ls", model, "--json").output)
    assert [v["number"] for v in versions] == [1]
    assert "weights/model.bin" in run("ls", f"{model}/1").output
    shown = json.loads(run("show", f"{model}@staging", "--json").output)
    assert {f["path"] for f in shown["files"]} == {"config.json", "weights/model.bin"}
    assert "digest" in run("show", f"{model}/1").output
    assert json.loads(run("show", model, "--json").output)["aliases"] == {"staging": 1}
    found = json.loads(run("search", f"name = '{model}'", "--json").output)
    assert [m["name"] for m in found] == [model]
    found = json.loads(run("search", "metadata.metrics.auc > 0.5", "--model", model,
                           "--json").output)
    assert [v["number"] for v in found] == [1]

    assert run("alias", "set", model, "champion", "1").exit_code == 0
    aliases = json.loads(run("alias", "ls", model, "--json").output)
    assert sorted(a["alias"] for a in aliases) == ["champion", "staging"]
    assert run("alias", "rm", model, "champion").exit_code == 0
    assert run("tag", "set", model, "team=risk", "tier=gold").exit_code == 0
    assert run("tag", "set", f"{model}@staging", "approved=yes").exit_code == 0
    assert run("tag", "rm", model, "tier").exit_code == 0
    assert json.loads(run("show", model, "--json").output)["tags"] == {"team": "risk"}
    assert json.loads(run("show", f"{model}/1", "--json").output)["tags"] == {
        "run": "42", "approved": "yes"}

    # One file changed: only its bytes go; the other is added by digest.
    (source / "config.json").write_text('{"layers": 3}')
    changed = run("push", str(source), "--model", model)
    assert changed.exit_code == 0, changed.output
    assert f"pushed {model}/2" in changed.output
    assert "1 uploaded (13 B sent), 1 already on the server" in changed.output

    # Deleting: refused without a terminal or --yes; a version with an alias is a conflict.
    refused = run("rm", f"{model}/1")
    assert refused.exit_code == 2 and "--yes" in refused.output
    conflict = run("rm", f"{model}/1", "--yes")
    assert conflict.exit_code == 5 and "version_has_aliases" in conflict.output
    assert run("rm", model, "--drop-alias", "staging", "--yes").exit_code == 2
    dropped = run("rm", f"{model}/1", "--drop-alias", "staging", "--yes")
    assert dropped.exit_code == 0, dropped.output
    assert f"deleted version {model}/1 and its alias(es) staging" in dropped.output
    assert json.loads(run("alias", "ls", model, "--json").output) == []
    assert run("rm", model, "--yes").exit_code == 0
    gone = run("show", model)
    assert gone.exit_code == 3 and "Error:" in gone.output and "model_not_found" in gone.output


def test_exit_codes(run, logged_in, registry, env, tmp_path):
    assert run("pull").exit_code == 2
    assert run("push", str(tmp_path)).exit_code == 2  # no --model
    assert run("show", "a/b").exit_code == 2
    assert run("tag", "set", "m", "no-equals-sign").exit_code == 2
    assert run("show", "no-such-model").exit_code == 3
    assert run("--token", "mr_bad_token", "ls").exit_code == 4
    assert run("tag", "set", "no-such-model", "k=v").exit_code == 3
    source = tmp_path / "model"
    write_random(source / "w.bin", 100)
    model = "exit-" + os.urandom(4).hex()
    assert run("push", str(source), "--model", model).exit_code == 0
    invalid = run("alias", "set", model, "Not An Alias!", "1")
    assert invalid.exit_code == 5 and "[invalid_alias]" in invalid.output
    assert run("alias", "set", model, "champion", "9").exit_code == 3
    (tmp_path / "empty").mkdir()
    assert run("push", str(tmp_path / "empty"), "--model", model).exit_code == 5
    result = run("--url", f"http://127.0.0.1:{free_port()}", "ls")
    assert result.exit_code == 6 and "cannot reach" in result.output
    env["MODELREG_CONFIG"] = str(tmp_path / "nowhere.toml")
    result = run("ls")
    assert result.exit_code == 2 and "modelreg login" in result.output


def test_help_documents_exit_codes_and_keeps_the_admin_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    flat = " ".join(result.output.split())
    for code, meaning in EXIT_CODES.items():
        assert f"{code} {' '.join(meaning.split())}" in flat
    for command in ("login", "push", "pull", "ls", "show", "search", "alias", "tag", "rm",
                    "db", "users", "tokens"):
        assert f"\n  {command} " in result.output


def test_console_script(registry, env, tmp_path):
    exe = Path(sys.executable).parent / "modelreg"
    environ = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    environ.update(MODELREG_URL=registry.url, MODELREG_TOKEN=registry.token)
    source = tmp_path / "model"
    write_random(source / "a" / "b.bin", 1000)
    model = "console-" + os.urandom(4).hex()

    def modelreg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *args], capture_output=True, text=True, env=environ,
                              timeout=120, check=False)

    pushed = modelreg("push", str(source), "--model", model, "--json")
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["version"]["number"] == 1
    assert pushed.stderr == ""  # no progress bars when not on a terminal
    pulled = modelreg("pull", f"{model}/1", str(tmp_path / "out"))
    assert pulled.returncode == 0 and tree(tmp_path / "out") == tree(source)
    missing = modelreg("show", f"{model}/7")
    assert missing.returncode == 3
    assert missing.stderr.startswith("Error:") and "Traceback" not in missing.stderr
    assert modelreg("--help").returncode == 0


def test_progress_bars_draw_without_errors():
    from rich.console import Console

    out = io.StringIO()
    bars = BarProgress(Console(file=out, force_terminal=True, width=100))
    bars.begin("upload", 2, 20 * MiB)
    bars.start("upload", "weights/model.bin", 16 * MiB)
    bars.advance("upload", "weights/model.bin", 8 * MiB)
    bars.start("upload", "weights/model.bin", 16 * MiB, 4 * MiB)  # restarted from 4 MiB
    bars.advance("upload", "weights/model.bin", 12 * MiB)
    bars.start("upload", "small.json", 10)
    bars.advance("upload", "small.json", 10)
    bars.finish("upload", "small.json")
    bars.finish("upload", "weights/model.bin")
    bars.end("upload")
    bars.close()
    assert "uploading 2 file(s)" in out.getvalue()


def test_config_file_locations_and_round_trip(tmp_path):
    from modelreg_client.config import config_path, load_settings, save_settings, state_dir

    assert config_path({"MODELREG_CONFIG": "/x/c.toml"}) == Path("/x/c.toml")
    xdg = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_STATE_HOME": str(tmp_path / "s")}
    assert config_path(xdg) == tmp_path / "xdg" / "modelreg" / "config.toml"
    assert state_dir(xdg) == tmp_path / "s" / "modelreg"
    assert state_dir({"MODELREG_STATE_DIR": "/y"}) == Path("/y")
    path = save_settings("http://h:1", 'mr_a"b\\c', xdg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_settings(xdg).token == 'mr_a"b\\c' and load_settings(xdg).url == "http://h:1"
    overridden = load_settings({**xdg, "MODELREG_URL": "http://other", "MODELREG_TOKEN": "t"})
    assert (overridden.url, overridden.token) == ("http://other", "t")
    path.write_text("not = [toml")
    with pytest.raises(ValueError, match="cannot read the config file"):
        load_settings(xdg)


def test_login_replaces_a_broken_config_file(run, registry, env):
    config = Path(env["MODELREG_CONFIG"])
    config.parent.mkdir(parents=True)
    config.write_text("url = [broken")
    assert run("ls").exit_code == 2
    assert run("login", registry.url, "--token", registry.token).exit_code == 0
    assert run("ls").exit_code == 0


def _give_files(registry, model: str, number: int, paths: list[str]) -> None:
    """Add files with ``paths`` to a stored version straight in the server's database, as
    an older server could have stored them (the registry refuses such paths today), and
    update the version's digest to match (the content is an existing file's)."""
    import sqlalchemy as sa

    from modelreg_client.manifest import version_digest

    engine = sa.create_engine(registry.settings["sqlalchemy.url"])
    try:
        with engine.begin() as conn:
            version_id = conn.scalar(sa.text(
                "SELECT v.id FROM versions v JOIN models m ON m.id = v.model_id "
                "WHERE m.name = :m AND v.number = :n"), {"m": model, "n": number})
            size, sha256 = conn.execute(sa.text(
                "SELECT size, sha256 FROM files WHERE version_id = :v"),
                {"v": version_id}).first()
            for path in paths:
                conn.execute(sa.text(
                    "INSERT INTO files (version_id, path, size, sha256, media_type, "
                    "created_at) VALUES (:v, :p, :s, :h, 'application/octet-stream', "
                    "CURRENT_TIMESTAMP)"), {"v": version_id, "p": path, "s": size,
                                            "h": sha256})
            files = conn.execute(sa.text(
                "SELECT path, size, sha256 FROM files WHERE version_id = :v"),
                {"v": version_id}).mappings().all()
            conn.execute(sa.text("UPDATE versions SET digest = :d WHERE id = :v"),
                         {"d": version_digest([dict(f) for f in files]), "v": version_id})
    finally:
        engine.dispose()


def test_pull_names_the_path_it_cannot_write_before_writing_anything(logged_in, registry,
                                                                     tmp_path):
    run = logged_in
    source = tmp_path / "model"
    (source / "x").mkdir(parents=True)
    (source / "x" / "weights.bin").write_bytes(b"weights")
    model = "odd-paths"
    for number, extra in ((1, ["w", "w/inner.bin"]), (2, ["\u00e9" * 128]),
                          (3, ["Model.bin", "model.bin"])):
        if number > 1:
            (source / f"v{number}").write_text(str(number))  # a new version each time
        assert run("push", str(source), "--model", model).exit_code == 0
        _give_files(registry, model, number, extra)

    destination = tmp_path / "pulled"
    result = run("pull", f"{model}/1", str(destination))
    assert result.exit_code == 7, result.output
    assert result.output.strip() == (
        f"Error: cannot write 'w' into {destination}: it is a file, but 'w/inner.bin' needs "
        "a folder of that name; nothing was written")
    assert not destination.exists()

    result = run("pull", f"{model}/2", str(destination))
    assert result.exit_code == 7, result.output
    assert "Error: cannot write '" + "\u00e9" * 128 + "'" in result.output
    assert "a name is longer than 255 bytes" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not destination.exists()

    # Something in the way locally: a file where the version needs a folder.
    destination.mkdir()
    (destination / "x").write_text("mine")
    result = run("pull", f"{model}/1", str(destination), "--json")
    assert result.exit_code == 7 and "a file" in result.output
    assert [p.name for p in destination.iterdir()] == ["x"]
    assert (destination / "x").read_text() == "mine"

    # Names differing only in case are two files on this (case-sensitive) filesystem.
    (destination / "x").unlink()
    result = run("pull", f"{model}/3", str(destination))
    assert result.exit_code == 0, result.output
    assert (destination / "Model.bin").read_bytes() == (destination / "model.bin").read_bytes()
    assert [p.name for p in destination.iterdir() if p.name.startswith(".")] == []
    assert "7  pull: a file's path cannot be written here" in run("--help").output


def test_paths_windows_cannot_write_are_named_before_a_pull(tmp_path):
    from modelreg_client.manifest import unwritable_path

    for path, reason in [("con.txt", "device name"), ("dir/NUL", "device name"),
                         ("com1", "device name"), ("a:b", "does not allow"),
                         ("what?", "does not allow"), ("dir./x", "ending in a dot"),
                         ("a ", "ending in a dot or a space")]:
        found = unwritable_path(["fine.bin", path], tmp_path, windows=True)
        assert found is not None and found[0] == path and reason in found[1], (path, found)
        assert unwritable_path(["fine.bin", path], tmp_path, windows=False) is None
    assert unwritable_path(["a/b", "a/c", "ab"], tmp_path) is None
    assert unwritable_path(["a", "a/b"], tmp_path)[0] == "a"
    assert list(tmp_path.iterdir()) == []


def test_json_errors_usage_errors_and_refused_connections(run, logged_in, registry, tmp_path):
    missing = run("show", "no-such-model", "--json")
    assert missing.exit_code == 3 and missing.stdout == ""
    error = json.loads(missing.stderr)["error"]
    assert error["code"] == "model_not_found" and error["exit_code"] == 3
    assert "no-such-model" in error["message"]
    usage = run("show", "a/b", "--json")
    assert usage.exit_code == 2 and json.loads(usage.stderr)["error"]["code"] == "usage_error"
    # A URL without a scheme is a usage error, for every command and for login.
    for args in (("--url", "localhost:6543", "ls"), ("login", "localhost:6543", "--token", "")):
        result = run(*args)
        assert result.exit_code == 2 and "not a URL" in result.output, result.output
    # Nothing listening: the answer comes at once, not after the retries' backoff.
    started = time.monotonic()
    refused = run("--url", f"http://127.0.0.1:{free_port()}", "ls")
    assert refused.exit_code == 6 and "refused" in refused.output
    assert time.monotonic() - started < 1.0


def test_a_server_that_is_not_a_registry_is_reported_as_such(run):
    class NotARegistry(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404, "Not Found")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotARegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = run("--url", f"http://127.0.0.1:{server.server_port}", "show", "fraud")
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 6, result.output
    assert "does not answer as a modelreg registry" in result.output
    assert "not_found" not in result.output


def test_a_closed_pipe_ends_the_command_quietly(registry, env, tmp_path):
    exe = Path(sys.executable).parent / "modelreg"
    environ = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    environ.update(MODELREG_URL=registry.url, MODELREG_TOKEN=registry.token)
    reader, writer = os.pipe()
    os.close(reader)  # like `| head` that has already exited
    try:
        done = subprocess.run([str(exe), "ls"], stdout=writer, stderr=subprocess.PIPE,
                              env=environ, timeout=60, check=False)
    finally:
        os.close(writer)
    assert done.returncode == 141
    assert done.stderr == b""


def test_whoami_alias_history_lineage_headers_and_unknown_aliases(logged_in, tmp_path):
    run = logged_in
    me = run("whoami")
    assert me.exit_code == 0 and me.output.startswith("ci at http://")
    assert "(global admin)" in me.output and "scopes: admin" in me.output
    assert json.loads(run("whoami", "--json").output)["is_admin"] is True
    model = f"who-{tmp_path.name[-12:].lower().strip('_')}".replace("_", "-")
    source = tmp_path / "model"
    write_random(source / "w.bin", 100)
    assert run("push", str(source), "--model", model, "--lineage", "run_id=run-6").exit_code == 0
    write_random(source / "w.bin", 101)
    pushed = run("push", str(source), "--model", model, "--lineage", "run_id=run-7",
                 "--lineage", "parent_version=1", "--alias", "staging", "--json")
    assert pushed.exit_code == 0, pushed.output
    lineage = json.loads(pushed.output)["version"]["lineage"]
    assert (lineage["run_id"], lineage["parent_version"]) == ("run-7", 1)
    run("alias", "set", model, "champion", "2")
    run("alias", "rm", model, "staging")
    history = run("alias", "history", model, "staging")
    assert history.exit_code == 0
    lines = history.output.splitlines()
    assert lines[0].split() == ["WHEN", "FROM", "TO", "BY"]
    assert [line.split()[2:4] for line in lines[1:]] == [["2", "-"], ["-", "2"]]
    assert run("ls").output.splitlines()[0].split() == ["MODEL", "LATEST", "ALIASES"]
    assert run("ls", model).output.splitlines()[0].split()[:3] == ["VERSION", "STATUS",
                                                                   "DIGEST"]
    assert run("ls", f"{model}/2").output.splitlines()[0].split() == ["SIZE", "SHA256", "PATH"]
    unknown = run("show", f"{model}@champoin")
    assert unknown.exit_code == 3 and "its aliases: champion" in unknown.output


def test_push_says_when_no_worker_runs_the_scan(env, tmp_path):
    """Without a terminal, the push still says why it waits instead of printing nothing."""
    with start_registry(**{"modelreg.worker.embedded": "false",
                           "modelreg.worker.stale_after": "1"}) as registry:
        source = tmp_path / "model"
        write_random(source / "w.bin", 100)
        result = CliRunner().invoke(main, [
            "--url", registry.url, "--token", registry.token, "push", str(source),
            "--model", "unscanned", "--wait", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert "note: unscanned/1: no worker has run yet" in result.stderr
    assert "modelreg worker" in result.stderr
    assert "(validating)" in result.stdout and "still validating" in result.stdout


def test_latest_is_the_newest_ready_version_in_ls_and_search(logged_in, registry, tmp_path):
    run = logged_in
    model = f"lat-{tmp_path.name[-12:].lower().strip('_')}".replace("_", "-")
    source = tmp_path / "model"
    write_random(source / "w.bin", 100)
    assert run("push", str(source), "--model", model).exit_code == 0
    with Client(registry.url, registry.token) as client:
        assert client.create_version(model).number == 2  # a newer draft
    for listing in (run("search", f"name = '{model}'"), run("ls")):
        [line] = [row for row in listing.output.splitlines() if row.startswith(model + " ")]
        assert line.split()[1] == "1", line
    versions = run("ls", model).output.splitlines()
    assert [row.split()[:2] for row in versions[1:]] == [["2", "draft"], ["1", "ready"]]
