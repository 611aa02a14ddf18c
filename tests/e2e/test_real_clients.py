"""Real clients, run non-interactively against aisix and a fake upstream (issue 11 item 6).

The CLIs come from npm at pinned versions (installed by scripts/test.sh into
tests/clients/node_modules): OpenAI's Codex CLI (`codex exec`, Responses API) and Claude Code
(`claude -p`, Anthropic Messages). Each run is offline, with telemetry and update checks off,
and must exit 0 with the answer text the fake upstream produced.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import ALIAS, CALLER_KEY, Gateway

from fakes.openai_upstream import FakeOpenAIUpstream

CLIENTS = Path(__file__).resolve().parents[1] / "clients" / "node_modules" / ".bin"
OFFLINE_ENV = {
    # no telemetry, error reporting, update checks or other calls home
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CODEX_DISABLE_UPDATE_CHECK": "1",
    "NO_COLOR": "1",
}


def cli(name: str) -> str:
    path = CLIENTS / name
    if not path.exists():  # installed by scripts/test.sh; a missing one is a setup failure
        pytest.fail(f"{path} is missing: run scripts/test.sh (it installs the pinned CLIs)")
    return str(path)


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **OFFLINE_ENV,
        **extra,
    }
    node = shutil.which("node")
    if node:
        env["PATH"] = str(Path(node).parent) + ":" + env["PATH"]
    return env


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 90) -> Any:
    return subprocess.run(
        args,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_codex_exec_through_the_responses_api(
    gateway: Any, fake_openai: FakeOpenAIUpstream, tmp_path: Path
) -> None:
    gw: Gateway = gateway()
    gw.seed(fake_openai.url)  # chat-only upstream: /v1/responses is translated
    home = tmp_path / "home"
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(
        f'model = "{ALIAS}"\n'
        'model_provider = "aisix"\n'
        "[model_providers.aisix]\n"
        'name = "aisix"\n'
        f'base_url = "{gw.proxy_url}/v1"\n'
        'env_key = "AISIX_API_KEY"\n'
        'wire_api = "responses"\n'
        "[analytics]\nenabled = false\n"
        "[feedback]\nenabled = false\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(home, CODEX_HOME=str(codex_home), AISIX_API_KEY=CALLER_KEY)
    done = run(
        [cli("codex"), "exec", "--skip-git-repo-check", "--sandbox", "read-only", "Say hello"],
        env,
        work,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "echo: " in done.stdout, done.stdout + done.stderr
    sent = [r for r in fake_openai.model_requests() if r.path == "/v1/chat/completions"]
    assert sent, "codex's call never reached the upstream"
    assert "Authorization" not in sent[-1].json  # sanity: a chat body, no caller key inside
    assert sent[-1].headers["authorization"] != f"Bearer {CALLER_KEY}"


def test_node_openai_sdk_responses_create(
    gateway: Any, fake_openai: FakeOpenAIUpstream, tmp_path: Path
) -> None:
    """The Node openai SDK (pinned in tests/clients) calls `responses.create`, stream and not,
    through aisix; the chat-only upstream is reached by translation."""
    gw: Gateway = gateway()
    gw.seed(fake_openai.url)
    script = Path(__file__).resolve().parents[1] / "clients" / "responses.mjs"
    if not (script.parent / "node_modules" / "openai").exists():
        pytest.fail("tests/clients/node_modules/openai is missing: run scripts/test.sh")
    node = shutil.which("node")
    assert node is not None, "node is required (scripts/test.sh installs it)"
    env = clean_env(
        tmp_path, AISIX_BASE_URL=gw.proxy_url + "/v1", AISIX_API_KEY=CALLER_KEY, AISIX_MODEL=ALIAS
    )
    done = run([node, str(script)], env, script.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["text"] == "echo: hello from node"
    assert result["status"] == "completed"
    assert result["request_id"]  # the x-request-id header the SDK reads
    assert result["streamed"] == "echo: stream from node"
    assert result["completed"] == "completed"
    chats = [r for r in fake_openai.model_requests() if r.path == "/v1/chat/completions"]
    assert len(chats) == 2


def test_langchain_chat_openai_with_the_responses_api(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    """LangChain's `ChatOpenAI(use_responses_api=True)` (langchain-openai, pinned) through aisix."""
    from langchain_openai import ChatOpenAI

    gw: Gateway = gateway()
    gw.seed(fake_openai.url)
    llm = ChatOpenAI(
        model=ALIAS,
        base_url=gw.proxy_url + "/v1",
        api_key=CALLER_KEY,
        use_responses_api=True,
        max_retries=0,
        timeout=20,
    )
    answer = llm.invoke("hello from langchain")
    assert answer.text == "echo: hello from langchain"
    streamed = "".join(chunk.text for chunk in llm.stream("stream from langchain"))
    assert streamed == "echo: stream from langchain"
    chats = [r for r in fake_openai.model_requests() if r.path == "/v1/chat/completions"]
    assert len(chats) == 2
