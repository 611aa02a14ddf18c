#!/usr/bin/env bash
# Quick start: install aisix into ./.venv and run it on the embedded default store (SQLite under
# ./data, no external services), with config.example.yaml. Extra arguments go to `aisix`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/aisix --config "${AISIX_CONFIG:-config.example.yaml}" "$@"
