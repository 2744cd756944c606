"""docs/plugins.md's walkthrough stays true: build its plugin from the document, install it,
run its tests, list it and watch a real server refuse a model.

The plugin is installed into a throw-away virtual environment that sees this environment's
packages through a ``.pth`` file, with ``--no-build-isolation --no-index`` so that nothing is
downloaded; everything lives in ``tmp_path`` and goes away with it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from modelreg.testing.server import free_port

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "plugins.md"
#: A fenced block that is a file of the walkthrough: ```python file=conftest.py
FILE_BLOCK = re.compile(r"^```\w* file=(?P<path>\S+)\n(?P<body>.*?)^```$", re.M | re.S)
#: Seconds any one step may take.
TIMEOUT = 120

pytestmark = pytest.mark.server


def walkthrough() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Walkthrough")
    return text[start:text.index("\n## ", start + 1)]


def walkthrough_files() -> dict[str, str]:
    return {m["path"]: m["body"] for m in FILE_BLOCK.finditer(walkthrough())}


def shown_output(command: str) -> list[str]:
    """The lines the walkthrough shows ``command`` printing (``...`` lines left out)."""
    text = walkthrough()
    after = text[text.index(f"$ {command}\n") + len(command) + 3:]
    lines = []
    for line in after.splitlines():
        if line.startswith("$ ") or line.startswith("```"):
            break
        if line.strip() and not line.strip().startswith("..."):
            lines.append(" ".join(line.split()))
    return lines


def test_the_walkthrough_has_its_files():
    files = walkthrough_files()
    assert set(files) == {"pyproject.toml", "modelreg_owner.py", "conftest.py",
                          "tests/test_owner.py"}


def run(*args: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def make_venv(path: Path) -> Path:
    """A virtual environment that sees this one's packages (and its editable installs)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True,
                   timeout=TIMEOUT)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=TIMEOUT).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(purelib, "_modelreg_parent_env.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n", encoding="utf-8")
    return python


def request(url: str, body: dict) -> tuple[int, dict]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"pserve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"pserve did not answer /healthz:\n{log.read_text()}")


def test_the_walkthrough_plugin_builds_installs_loads_and_refuses_a_model(tmp_path):
    source = tmp_path / "modelreg-owner"
    for name, body in walkthrough_files().items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(body, encoding="utf-8")
    python = make_venv(tmp_path / "venv")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST_", "PIP_", "PYTHON"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    # $ pip install -e .   (nothing downloaded: the build tools come from this environment)
    run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
        "--no-index", "--no-cache-dir", "-e", ".", cwd=source, env=env)

    # $ pytest -q
    # ...without warnings: the documented conftest.py lets pytest rewrite the kit's asserts.
    run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "-W", "error::pytest.PytestAssertRewriteWarning", cwd=source, env=env)

    # $ modelreg plugins development.ini
    port = free_port()
    ini = source / "development.ini"
    ini.write_text(
        "[app:main]\nuse = egg:modelreg\n"
        f"sqlalchemy.url = sqlite:///{tmp_path / 'registry.sqlite'}\n"
        f"modelreg.storage.local.path = {tmp_path / 'blobs'}\n"
        "modelreg.auth.anonymous = write\n\n"
        f"[server:main]\nuse = egg:waitress#main\nlisten = 127.0.0.1:{port}\n",
        encoding="utf-8")
    cli = [python, "-c", "import sys; from modelreg_client.cli import main; "
                         "sys.argv[0] = 'modelreg'; sys.exit(main())"]
    run(*cli, "db", "upgrade", "development.ini", cwd=source, env=env)
    listing = run(*cli, "plugins", "development.ini", cwd=source, env=env)
    printed = [" ".join(line.split()) for line in listing.splitlines()]
    shown = shown_output("modelreg plugins development.ini")
    assert shown and all(line in printed for line in shown), (shown, listing)
    assert "owner modelreg-owner 0.1.0" in printed
    assert printed[printed.index("owner modelreg-owner 0.1.0") + 1] == (
        "hooks: modelreg_validate_model")

    # $ pserve development.ini, then the two curl commands
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(python), "-m", "pyramid.scripts.pserve", str(ini)], cwd=source, env=env,
            stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, server, log)
        status, body = request(f"{url}/api/v1/models", {"name": "churn"})
        assert status == 422, body
        assert body["error"]["code"] == "validation_failed"
        (problem,) = body["error"]["details"]["problems"]
        assert problem == {"code": "missing_owner",
                           "message": "models must name their owner in the tag 'owner'",
                           "field": "tags.owner"}
        text = walkthrough()
        assert '"code": "validation_failed"' in text
        for key, value in problem.items():
            assert f'"{key}": {json.dumps(value)}' in text
        status, body = request(f"{url}/api/v1/models",
                               {"name": "churn", "tags": {"owner": "ana"}})
        assert status == 201, body
        assert body["name"] == "churn"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
