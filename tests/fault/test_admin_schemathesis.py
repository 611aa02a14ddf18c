"""Schemathesis against the admin API's own OpenAPI document (issue 12 items 1, 7, 10).

A real `aisix` subprocess (SQLite store in tmp_path) is probed with `st run`: every check
except `positive_data_acceptance` (a schema-valid body may still name a provider key or scope
that does not exist: a documented 400 no JSON Schema can express). The run is bounded (fixed
seed, few examples per operation, no example database) to stay well under a minute; any
500, undocumented status, body or header that violates the document, or 405 without `Allow`
fails the test with schemathesis' own report.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.timeout(150)

ADMIN_KEY = "schemathesis-admin-key-0123"
SEED = 12
MAX_EXAMPLES = 10
RUN_TIMEOUT_S = 100


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def admin_url(tmp_path: Path) -> Iterator[str]:
    ports = [_free_port() for _ in range(3)]
    config = {
        "proxy": {"addr": f"127.0.0.1:{ports[0]}"},
        "admin": {"addr": f"127.0.0.1:{ports[1]}", "admin_keys": [ADMIN_KEY]},
        "data_dir": str(tmp_path / "data"),
        "observability": {
            "access_log": False,
            "metrics": {"prometheus": {"addr": f"127.0.0.1:{ports[2]}"}},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (tmp_path / "aisix.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "aisix", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{ports[1]}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (tmp_path / "aisix.log").read_text()
            try:
                with urllib.request.urlopen(url + "/livez", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "aisix did not start"
            time.sleep(0.05)
        yield url
        assert process.poll() is None, "aisix died during the run"
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def test_admin_api_matches_its_openapi_document(admin_url: str, tmp_path: Path) -> None:
    st = shutil.which("st", path=os.path.dirname(sys.executable)) or shutil.which("st")
    assert st is not None, "schemathesis (the `test` extra) is not installed"
    result = subprocess.run(
        [
            st,
            "run",
            admin_url + "/admin/openapi.json",
            "--header",
            f"Authorization: Bearer {ADMIN_KEY}",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--seed",
            str(SEED),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    report = result.stdout[-12_000:] + result.stderr[-2_000:]
    assert result.returncode == 0, report
    assert "Tested: " in result.stdout and "Server error" not in result.stdout, report
