"""The README's caller-key walkthrough, run as written against a real gateway subprocess.

The shell blocks under "## Walkthrough" are concatenated into one bash script. Only the fixed
addresses are rewritten to this test's free ports, and `.venv/bin/aisix` to the interpreter
running the tests; every other character is the README's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough_script() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Walkthrough", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 4, "the walkthrough lost its shell blocks"
    return "\n".join(blocks)


def test_readme_walkthrough_runs_as_written(
    gateway: Callable[..., Any], port_factory: Callable[[], int]
) -> None:
    gw = gateway({"admin": {"admin_keys": ["admin-local-only-change-me"]}})
    demo_port = port_factory()
    script = walkthrough_script()
    script = script.replace("127.0.0.1:3000", gw.proxy_url.removeprefix("http://"))
    script = script.replace("127.0.0.1:3001", gw.admin_url.removeprefix("http://"))
    script = script.replace("--port 8000", f"--port {demo_port}")
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{demo_port}")
    script = script.replace(".venv/bin/aisix", f"{sys.executable} -m aisix")
    for run in (1, 2):  # issue 12 item 10: a second run must not 409 or traceback
        result = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert result.returncode == 0, f"run {run}: " + result.stderr + result.stdout
        assert "Traceback" not in result.stderr
        check_output(result.stdout, result.stderr, first_run=run == 1)
    gw.assert_alive()


def check_output(out: str, err: str, first_run: bool) -> None:
    lines = out.splitlines()
    completion = json.loads(next(line for line in lines if "chat.completion" in line))
    assert completion["model"] == "gpt-4o-prod"
    assert completion["choices"][0]["message"]["content"] == "echo: Hello from AISIX."
    models = json.loads(next(line for line in lines if '"object":"list"' in line))
    assert [m["id"] for m in models["data"]] == ["gpt-4o-prod"]
    rotated = json.loads(next(line for line in lines if '"plaintext"' in line))
    assert re.fullmatch(r"sk-[0-9a-f]{32}", rotated["plaintext"])
    assert rotated["entry"]["value"]["allowed_models"] == ["gpt-4o-prod"]
    assert "old key: 401" in out
    assert "new key: 200" in out
    created = json.loads(next(line for line in err.splitlines() if '"key_hash"' in line))
    assert created["id"] == "app-caller"
    assert created["value"]["key_hash"] == (
        "43d758e3b4aa2aacdb4b49c09c26435fb5083148fda6cfc9c5e38078915c6bdb"
    )
    # the first run creates (revision 1, rotated to 2); the second updates (3, rotated to 4)
    assert (created["revision"], rotated["entry"]["revision"]) == ((1, 2) if first_run else (3, 4))
