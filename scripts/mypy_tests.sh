#!/usr/bin/env bash
# mypy on the tests, relaxed profile (tests/mypy.ini; src/ is strict under
# pyproject.toml). pytest imports test directories as top-level modules, so mypy sees each
# file by its basename: every test file and helper has a unique name (pytest requires that too),
# except conftest.py. The tree is checked once without the nested conftest.py files, then each
# nested conftest.py on its own, so no two modules named `conftest` meet in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
MYPY=(.venv/bin/mypy --config-file tests/mypy.ini --cache-dir .mypy_cache/tests)
mapfile -t nested < <(find tests -mindepth 2 -name conftest.py -not -path '*/node_modules/*' | sort)
MYPYPATH=src:tests:bench "${MYPY[@]}" tests --exclude 'node_modules' --exclude 'tests/.+/conftest\.py$'
for conftest in "${nested[@]}"; do
  MYPYPATH=src:tests:bench "${MYPY[@]}" "$conftest"
done
