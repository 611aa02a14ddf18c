"""The adapter rows: aisix with another wire family behind it, against nginx's fixed bodies.

Each Family is one target: `aisix-anthropic-native` (Anthropic Messages in, relayed natively),
`aisix-anthropic`, `aisix-gemini` and `aisix-bedrock` (OpenAI chat in, translated). It names
the protocol the client speaks, the provider key (adapter, a dummy secret, and the api_base
paths under the nginx root for the JSON and the streamed answers) and the upstream model.
`FIXED_STREAMS` is where nginx serves each family's fixed stream, for the direct floor of the
time to first token. The locations are in upstreams.py, the bodies in fixtures.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

from fixtures import ANTHROPIC_MODEL, BEDROCK_MODEL, GEMINI_MODEL

#: static dummy AWS keys: nginx does not check SigV4, the gateway still signs every request
BEDROCK_SECRET = json.dumps(
    {
        "access_key_id": "AKIDBENCH0000000000",
        "secret_access_key": "bench-dummy-secret-access-key",
        "region": "us-east-1",
    }
)


@dataclass(frozen=True)
class Family:
    """One adapter target: what the client speaks and which provider key serves it."""

    target: str
    label: str
    inbound: str  # "chat" (OpenAI, /v1/chat/completions) or "messages" (Anthropic)
    wire: str  # the upstream family: a key of FIXED_STREAMS
    adapter: str
    provider: str  # the model's provider label
    model_name: str
    secret: str
    static_path: str  # api_base under the nginx root for non-streamed answers
    sse_path: str  # ... and for streamed ones (the same when the URL tells them apart)

    @property
    def client_path(self) -> str:
        return "/v1/messages" if self.inbound == "messages" else "/v1/chat/completions"

    @property
    def client_format(self) -> str:
        """The stream format the client reads back (bench/stream_probe.py --format)."""
        return "anthropic" if self.inbound == "messages" else "openai"


FAMILIES: dict[str, Family] = {
    f.target: f
    for f in (
        Family(
            "aisix-anthropic-native",
            "Anthropic in → Anthropic (native)",
            "messages",
            "anthropic",
            "anthropic",
            "anthropic",
            ANTHROPIC_MODEL,
            "sk-ant-bench-0000000000000000",
            "/anthropic",
            "/anthropic-stream",
        ),
        Family(
            "aisix-anthropic",
            "OpenAI in → Anthropic (translated)",
            "chat",
            "anthropic",
            "anthropic",
            "anthropic",
            ANTHROPIC_MODEL,
            "sk-ant-bench-0000000000000000",
            "/anthropic",
            "/anthropic-stream",
        ),
        Family(
            "aisix-gemini",
            "OpenAI in → Gemini (translated)",
            "chat",
            "gemini",
            "gemini",
            "google",
            GEMINI_MODEL,
            "AIza-bench-0000000000000000",
            "/gemini",
            "/gemini",
        ),
        Family(
            "aisix-bedrock",
            "OpenAI in → Bedrock (translated)",
            "chat",
            "bedrock",
            "bedrock",
            "bedrock",
            BEDROCK_MODEL,
            BEDROCK_SECRET,
            "/bedrock",
            "/bedrock",
        ),
    )
}

#: path under the nginx root of each family's fixed stream, as its provider would request it
FIXED_STREAMS: dict[str, str] = {
    "openai": "/stream/v1/chat/completions",
    "anthropic": "/anthropic-stream/v1/messages",
    "gemini": f"/gemini/v1beta/models/{GEMINI_MODEL}:streamGenerateContent?alt=sse",
    "bedrock": f"/bedrock/model/{quote(BEDROCK_MODEL, safe='')}/converse-stream",
}
