"""`aisix schema` and `aisix validate` (issue 12 items 6, 10): `--help` lists the kinds, a
closed pipe is no traceback, validate applies the startup checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from aisix.admin.openapi import resource_schemas

AISIX = [sys.executable, "-m", "aisix"]


def test_schema_help_lists_every_kind() -> None:
    result = subprocess.run(
        [*AISIX, "schema", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    for kind in resource_schemas():
        assert kind in result.stdout


def test_schema_into_a_closed_pipe_ends_quietly() -> None:
    """`aisix schema models | head -1`: the reader is gone before aisix writes (its startup
    takes far longer than closing our end of the pipe)."""
    process = subprocess.Popen(
        [*AISIX, "schema", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    process.stderr.close()
    code = process.wait(30)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == 0


def test_schema_of_one_kind_and_unknown_kind() -> None:
    result = subprocess.run([*AISIX, "schema", "apikeys"], capture_output=True, timeout=30)
    assert result.returncode == 0
    assert orjson.loads(result.stdout)["title"] == "ApiKey"
    unknown = subprocess.run([*AISIX, "schema", "nope"], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 2 and "provider_keys" in unknown.stderr


def test_validate_applies_the_startup_checks(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("admin: {admin_keys: [short-key]}\n")
    bad = subprocess.run(
        [*AISIX, "validate", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 1 and "admin.admin_keys[0]" in bad.stderr
    config.write_text("admin: {admin_keys: [a-long-enough-admin-key]}\n")
    good = subprocess.run(
        [*AISIX, "validate", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert (good.returncode, good.stdout.strip()) == (0, "ok")
