#!/usr/bin/env bash
# Installs everything the test suite needs (redis-server, etcd-server, nginx from Debian packages,
# Python deps in ./.venv, the pinned CLI clients from npm in tests/clients) and runs the whole
# suite: ruff, mypy (strict on src/, relaxed on tests/), the import-layer contract, then pytest
# under coverage (the gateway subprocesses of the e2e tests included), and the coverage report
# with its floor (enforced on whole-suite runs, i.e. when no pytest arguments are given).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

need_apt=()
# postgresql (usage ledger tests): Debian keeps initdb and postgres off PATH
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
# Debian's chromium and chromium-driver for the dashboard's browser tests (tests/e2e/test_ui*.py)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
# the bench's static upstream, served by the tests of the bench's adapter rows
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx-light)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "please install: ${need_apt[*]} (Debian/Ubuntu: sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# the real CLI clients the e2e suite drives (pinned in tests/clients/package-lock.json)
if ! cmp -s tests/clients/package-lock.json tests/clients/node_modules/.aisix-lock; then
  (cd tests/clients && npm ci --no-audit --no-fund --loglevel=error \
    && cp package-lock.json node_modules/.aisix-lock)
fi

.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
bash scripts/mypy_tests.sh
.venv/bin/lint-imports

rm -f .coverage .coverage.*
status=0
.venv/bin/coverage run -m pytest "$@" || status=$?
.venv/bin/coverage combine -q
if [ $# -eq 0 ]; then
  .venv/bin/coverage report || status=$?
else
  .venv/bin/coverage report --fail-under=0
fi
exit "$status"
