#!/usr/bin/env bash
# Remake the screenshots of docs/ui.md: the browser tests save one per page here.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELREG_UI_SCREENSHOTS="$PWD/docs/ui" .venv/bin/python -m pytest -q -p no:cacheprovider \
    plugins/modelreg-web/tests/test_web_browser.py
