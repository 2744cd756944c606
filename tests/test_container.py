"""The container image and compose file, checked as far as a machine without an engine can.

No container engine runs here, so nothing is built: the Dockerfile passes hadolint, every file
it copies exists and reaches the build context, the command it runs is the one
docs/deployment.md gives, its entry point runs for real (migration, first-token help, exec),
and compose.yaml validates against the Compose specification's schema with pinned images.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"


def tool(name: str) -> str:
    """A linter installed by the test extra into the suite's environment."""
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed: it comes with the test extra (setup.cfg)"
    return path


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (keyword, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            result.append((keyword.upper(), arguments.strip()))
    return result


def dockerignored(path: str) -> bool:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    parts = path.rstrip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
               for pattern in patterns for prefix in prefixes)


def test_the_dockerfile_passes_hadolint():
    result = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_file_the_dockerfile_copies_exists_in_the_build_context():
    copies = [args for keyword, args in instructions()
              if keyword == "COPY" and "--from=" not in args]
    assert copies
    for args in copies:
        sources = [word for word in args.split() if not word.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"


def test_the_image_installs_every_first_party_plugin():
    # dev.py installs every plugins/*/setup.cfg; the image must not lag behind it
    installs = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    for setup in sorted((ROOT / "plugins").glob("*/setup.cfg")):
        plugin = setup.parent.relative_to(ROOT).as_posix()
        assert f"./{plugin} " in installs + " ", f"the Dockerfile does not install {plugin}"


def test_the_image_runs_pserve_production_ini_as_a_non_root_user():
    found = dict(instructions())
    assert json.loads(found["CMD"]) == ["pserve", "production.ini"]
    user = found["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert "/readyz" in found["HEALTHCHECK"]
    # The command and the health check are the ones the deployment guide gives.
    guide = (ROOT / "docs" / "deployment.md").read_text()
    assert "pserve production.ini" in guide and "/readyz" in guide
    # The repository's production.ini, served by modelreg's Waitress runner, which listens
    # where MODELREG_LISTEN says: every interface of the container.
    assert "use = egg:modelreg#waitress" in (ROOT / "production.ini").read_text()
    assert "MODELREG_LISTEN=*:6543" in found["ENV"]
    # Multi-stage: the image that runs is not the one that compiled.
    assert sum(keyword == "FROM" for keyword, _ in instructions()) == 2


def test_the_entry_point_passes_shellcheck():
    result = subprocess.run([tool("shellcheck"), str(ENTRYPOINT)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_entry_point_migrates_explains_the_first_token_and_runs_the_command(tmp_path):
    shutil.copy(ROOT / "production.ini", tmp_path / "production.ini")
    env = {**os.environ,
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "MODELREG_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.sqlite'}",
           "MODELREG_STORAGE_LOCAL_PATH": str(tmp_path / "blobs")}

    def start(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(ENTRYPOINT), *command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    first = start("modelreg", "db", "current", "production.ini")
    assert first.returncode == 0, first.stderr
    assert "(head)" in first.stdout  # migrated before the command ran
    assert "users add admin production.ini --admin" in first.stderr
    assert "tokens create admin production.ini --scope admin" in first.stderr

    made = subprocess.run([BIN / "modelreg", "users", "add", "admin", "production.ini",
                           "--admin"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    again = start("sh", "-c", "echo served")
    assert again.returncode == 0, again.stderr
    assert again.stdout.endswith("served\n")
    assert "no principal exists yet" not in again.stderr


def test_compose_validates_against_the_compose_specification():
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_pins_its_images_and_configures_the_registry_through_settings_it_reads():
    import yaml

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name, service in services.items():
        image = service.get("image", "")
        if "build" not in service:
            repository, _, tag = image.rpartition(":")
            assert repository and tag and tag != "latest" and re.search(r"\d", tag), (
                f"service {name}: image {image!r} is not pinned to a version")
    registry = services["modelreg"]
    assert registry["build"] == "."
    assert "command" not in registry  # the image's own: pserve production.ini
    environment = registry["environment"]
    assert environment["MODELREG_STORAGE"] == "s3"
    assert environment["MODELREG_DATABASE_URL"].startswith("postgresql+psycopg://")
    # Each MODELREG_S3_* variable names a setting the S3 backend reads.
    from modelreg_s3 import ENV_PREFIX
    documented = Path(sys.modules["modelreg_s3"].__file__).read_text()
    for variable in environment:
        if variable.startswith(ENV_PREFIX):
            setting = variable.removeprefix(ENV_PREFIX).lower()
            assert f"``{setting}``" in documented, f"{variable}: no setting {setting}"


def test_the_entry_point_is_executable():
    assert os.access(ENTRYPOINT, os.X_OK)
