"""The code base stays ruff-clean (configuration in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the test extra)")
    result = subprocess.run([ruff, "check", "--quiet", str(ROOT)], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_folder_of_python_modules_is_a_package():
    """setuptools' ``find:`` ships only folders with an ``__init__.py``; a folder of modules
    without one is left out of the package list and warned about ("Package ... is absent from
    the `packages` configuration") when the distributions are built."""
    roots = [ROOT / "src", ROOT / "client" / "src",
             *(plugin / "src" for plugin in (ROOT / "plugins").iterdir())]
    missing = []
    for root in roots:
        for module in root.rglob("*.py"):
            folder = module.parent
            if folder != root and ".egg-info" not in str(folder) \
                    and not (folder / "__init__.py").exists():
                missing.append(str(folder.relative_to(ROOT)))
    assert sorted(set(missing)) == []
