"""The bench's fixed Gemini bodies (the aisix-gemini row) are valid Gemini wire: they decode
with the Gemini codec to the same answer the OpenAI rows relay, and nginx serves them at the
URLs the gemini provider builds."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import fixtures  # noqa: E402
import upstreams  # noqa: E402
from aisix.providers import gemini  # noqa: E402
from aisix.providers.base import TLSConfig, UpstreamCall  # noqa: E402
from aisix.resources import DirectModel, ProviderKey  # noqa: E402
from aisix.wire.gemini import CODEC  # noqa: E402
from aisix.wire.openai_in import CHAT  # noqa: E402
from aisix.wire.translate import TranslatingRelay  # noqa: E402


def test_fixed_answer_decodes_like_the_openai_one() -> None:
    response = CODEC.decode_response(orjson.loads(fixtures.gemini_json()))
    openai_message = fixtures.COMPLETION["choices"][0]["message"]  # type: ignore[index]
    assert response.message.text() == openai_message["content"]
    assert response.usage is not None and response.usage.total_tokens == 21


def test_fixed_stream_relays_as_eight_chunks_with_usage() -> None:
    body = {"stream_options": {"include_usage": True}}
    relay = TranslatingRelay(CODEC.stream_decoder(), CHAT.stream_encoder("bench-sse", "r", body))
    out = relay.feed(fixtures.gemini_sse_body()) + relay.end()
    assert relay.done and relay.usage is not None and relay.usage.completion_tokens == 8
    out += relay.terminal()
    assert out.count(b'"content":"tok') == 8 and out.endswith(b"data: [DONE]\n\n")


def test_nginx_serves_them_where_the_provider_sends(tmp_path: Path) -> None:
    config = upstreams.nginx_config(tmp_path, 8080)
    key = ProviderKey(
        display_name="bench-gemini",
        adapter="gemini",
        secret="AIza-bench",
        api_base="http://127.0.0.1:8080/gemini",
    )
    model = DirectModel(
        display_name="bench-model",
        provider="google",
        model_name="gemini-2.5-flash",
        provider_key_id="k",
    )
    provider = gemini.build_provider(key, model, TLSConfig())
    canonical = CHAT.to_canonical(orjson.loads(fixtures.request_body("bench-model", stream=True)))
    url = provider.build(UpstreamCall("chat", True, "r", canonical=canonical)).url
    path = url.removeprefix("http://127.0.0.1:8080").split("?")[0]
    assert path == "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert "location ~ ^/gemini/v1beta/models/[^/]+:streamGenerateContent$" in config
    assert "location ~ ^/gemini/v1beta/models/[^/]+:generateContent$" in config
