"""Private virtualenvs the harness installs for itself (never gateway dependencies).

- bench/.litellm-venv: LiteLLM's proxy at a pinned version, the comparison target;
- bench/.tools-venv: matplotlib for the PNG chart, py-spy for `--profile`.
A marker file records what was installed, so reruns reuse the venv. Failures are returned as a
reason string, never raised: a missing comparison is recorded in the results, not fatal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from upstreams import BENCH_DIR

# litellm >= 1.106 needs litellm-proxy / litellm-proxy-extras builds that PyPI does not carry
# for those versions; 1.105.7 is the newest release whose [proxy] extra installs.
LITELLM_VERSION = "1.105.7"
LITELLM_VENV = BENCH_DIR / ".litellm-venv"
TOOLS_VENV = BENCH_DIR / ".tools-venv"
TOOLS = ["matplotlib", "py-spy"]


def ensure_venv(venv: Path, requirements: list[str], timeout: float) -> str | None:
    """Create `venv` with `requirements` unless its marker says so already; None when ready."""
    marker = venv / ".bench-installed"
    wanted = "\n".join(requirements)
    if marker.exists() and marker.read_text() == wanted:
        return None
    log = venv.parent / f"{venv.name}.install.log"
    try:
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        with log.open("w") as out:
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", *requirements],
                check=True,
                timeout=timeout,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
        errors = [line for line in tail if "WARNING" not in line]
        return f"install of {' '.join(requirements)} failed: {exc}; {' | '.join(errors)}"
    marker.write_text(wanted)
    return None


def ensure_litellm(timeout: float = 900) -> str | None:
    return ensure_venv(LITELLM_VENV, [f"litellm[proxy]=={LITELLM_VERSION}"], timeout)


def ensure_tools(timeout: float = 600) -> str | None:
    return ensure_venv(TOOLS_VENV, TOOLS, timeout)
