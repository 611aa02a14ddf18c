"""User-Agent → `client_type`, the bounded label of `aisix_llm_tokens_by_client_total`.

Operator rules (`observability.metrics.client_type_rules`: regex, case-insensitive,
unanchored) are tried first, in order, then a built-in table of well-known SDKs and tools
(substring match, products before the HTTP libraries they embed), else `other`; an empty or
missing User-Agent is `unknown`. The label set is bounded by the rules and the table; the raw
User-Agent is never a label. Rules are compiled once; results are memoised per distinct
User-Agent (bounded), so the metrics subscriber pays one dict hit per request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from aisix.settings_compat import ClientTypeRule

#: (lowercase substring, client type), most specific first
BUILTIN_CLIENTS: tuple[tuple[str, str], ...] = (
    ("claude-cli", "claude-code"),
    ("claude-code", "claude-code"),
    ("codex", "codex"),
    ("cline", "cline"),
    ("roo-code", "roo-code"),
    ("roocode", "roo-code"),
    ("kilo-code", "kilocode"),
    ("kilocode", "kilocode"),
    ("githubcopilot", "github-copilot"),
    ("cursor", "cursor"),
    ("opencode", "opencode"),
    ("qwencode", "qwen-code"),
    ("geminicli", "gemini-cli"),
    ("zed/", "zed"),
    ("aider", "aider"),
    ("openai-python", "openai-python"),
    ("openai/python", "openai-python"),
    ("openai-node", "openai-node"),
    ("openai/js", "openai-node"),
    ("anthropic-sdk-python", "anthropic-python"),
    ("anthropic/python", "anthropic-python"),
    ("anthropic-sdk-typescript", "anthropic-typescript"),
    ("anthropic/js", "anthropic-typescript"),
    ("langchain", "langchain"),
    ("llama-index", "llamaindex"),
    ("llama_index", "llamaindex"),
    ("llamaindex", "llamaindex"),
    ("litellm", "litellm"),
    ("ai-sdk/provider-utils", "vercel-ai-sdk"),
    ("curl", "curl"),
    ("python-requests", "python-requests"),
    ("python-httpx", "httpx"),
    ("httpx", "httpx"),
    ("aiohttp", "aiohttp"),
    ("python-urllib", "python-urllib"),
    ("okhttp", "okhttp"),
    ("go-http-client", "go-http-client"),
    ("node-fetch", "node"),
    ("undici", "node"),
    ("axios", "node"),
    ("postmanruntime", "postman"),
    ("mozilla", "browser"),
)
MEMO_LIMIT = 4096


class ClientTypeClassifier:
    def __init__(self, rules: Sequence[ClientTypeRule] = ()) -> None:
        self._rules = tuple((re.compile(r.pattern, re.IGNORECASE), r.client) for r in rules)
        self._memo: dict[str, str] = {}

    def classify(self, user_agent: str | None) -> str:
        if not user_agent:
            return "unknown"
        found = self._memo.get(user_agent)
        if found is None:
            found = self._classify(user_agent)
            if len(self._memo) < MEMO_LIMIT:
                self._memo[user_agent] = found
        return found

    def _classify(self, user_agent: str) -> str:
        if not user_agent.strip():
            return "unknown"
        for pattern, client in self._rules:
            if pattern.search(user_agent):
                return client
        lowered = user_agent.lower()
        for needle, client in BUILTIN_CLIENTS:
            if needle in lowered:
                return client
        return "other"
