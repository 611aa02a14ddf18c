#!/usr/bin/env bash
# Regenerates the dashboard screenshots in docs/ui/ by running the browser tests with
# AISIX_UI_SCREENSHOTS set: each page is captured by the test that exercises it (real gateway,
# fake upstream, headless Debian Chromium). Needs the test venv (bash scripts/test.sh once).
set -euo pipefail
cd "$(dirname "$0")/.."
export AISIX_UI_SCREENSHOTS="${AISIX_UI_SCREENSHOTS:-$PWD/docs/ui}"
mkdir -p "$AISIX_UI_SCREENSHOTS"
exec .venv/bin/pytest -q tests/e2e/test_ui.py tests/e2e/test_ui_usage.py "$@"
