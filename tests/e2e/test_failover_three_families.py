"""A routing alias failing over across three wire families (issue 10 item 5): Anthropic
(overloaded) → Gemini (503) → Bedrock (answers), streamed and not, through the openai and
anthropic SDKs. Each attempt is translated or relayed on its own; the answer names the
target that served it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
import pytest
from e2e_helpers import Gateway, wait_for

from fakes.anthropic_upstream import FakeAnthropicUpstream
from fakes.anthropic_upstream import Reply as AnthropicReply
from fakes.bedrock_upstream import ACCESS_KEY, REGION, SECRET_KEY, FakeBedrock
from fakes.gemini_upstream import FakeGeminiUpstream, GeminiReply

CALLER = "sk-three-families"
GEMINI_KEY = "AIza-three-families"


@pytest.fixture
def fakes() -> Iterator[tuple[FakeAnthropicUpstream, FakeGeminiUpstream, FakeBedrock]]:
    claude = FakeAnthropicUpstream(api_key="sk-ant-three").start()
    bedrock = FakeBedrock().start()
    with FakeGeminiUpstream() as gemini:
        gemini.api_key = GEMINI_KEY
        try:
            yield claude, gemini, bedrock
        finally:
            claude.stop()
            bedrock.stop()


@pytest.fixture
def gw(
    gateway: Any, fakes: tuple[FakeAnthropicUpstream, FakeGeminiUpstream, FakeBedrock]
) -> Gateway:
    claude, gemini, bedrock = fakes
    g: Gateway = gateway()
    keys = {
        "claude": {"adapter": "anthropic", "secret": "sk-ant-three", "api_base": claude.url},
        "gemini": {"adapter": "gemini", "secret": GEMINI_KEY, "api_base": gemini.url},
        "bedrock": {
            "adapter": "bedrock",
            "api_base": bedrock.url,
            "secret": orjson.dumps(
                {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "region": REGION}
            ).decode(),
        },
    }
    upstream_models = {"claude": "claude-sonnet-4", "gemini": "gemini-2.5-flash",
                       "bedrock": "anthropic.claude-3-haiku-20240307-v1:0"}  # fmt: skip
    for name, key in keys.items():
        pk = g.create("provider_keys", {"display_name": f"{name}-key", "provider": name, **key})
        g.create(
            "models",
            {
                "display_name": f"{name}-model",
                "provider": name,
                "model_name": upstream_models[name],
                "provider_key_id": pk,
                "retries": 0,
                "cooldown": {"enabled": False},
            },
        )
    targets = [{"model": f"{n}-model", "priority": i} for i, n in enumerate(keys)]
    g.create(
        "models",
        {"display_name": "everywhere", "routing": {"strategy": "failover", "targets": targets}},
    )
    g.create_api_key(CALLER, ["everywhere"])
    return g


def fail_first_two(fakes: tuple[FakeAnthropicUpstream, FakeGeminiUpstream, FakeBedrock]) -> None:
    claude, gemini, _ = fakes
    claude.script(AnthropicReply.error(529, "Overloaded", "overloaded_error"))
    gemini.script(GeminiReply.error(503, "The model is overloaded."))


def ready(gw: Gateway) -> None:
    def callable_() -> bool:
        probe = gw.proxy(
            "POST", "/v1/chat/completions", {"model": "everywhere", "messages": []}, api_key=CALLER
        )
        return probe.status == 400  # authenticated and resolved (empty messages is a 400)

    wait_for(callable_, 5.0, "the routing alias to be callable")


def test_openai_sdk_non_stream_and_stream(gw: Gateway, fakes: Any) -> None:
    ready(gw)
    client = gw.openai_client(api_key=CALLER)
    fail_first_two(fakes)
    raw = client.chat.completions.with_raw_response.create(
        model="everywhere", messages=[{"role": "user", "content": "who answers?"}]
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "echo: who answers?"
    assert answer.model == "everywhere"
    assert raw.headers["x-aisix-served-by"] == "bedrock-model"
    claude, gemini, bedrock = fakes
    assert claude.requests and gemini.requests and bedrock.requests[-1].signature_ok
    fail_first_two(fakes)
    with client.chat.completions.with_streaming_response.create(
        model="everywhere", messages=[{"role": "user", "content": "stream it"}], stream=True
    ) as streamed:
        assert streamed.headers["x-aisix-served-by"] == "bedrock-model"
        text = "".join((c.choices[0].delta.content or "") for c in streamed.parse() if c.choices)
    assert text == "echo: stream it"


def test_anthropic_sdk_non_stream_and_stream(gw: Gateway, fakes: Any) -> None:
    ready(gw)
    client = anthropic.Anthropic(base_url=gw.proxy_url, api_key=CALLER, max_retries=0)
    fail_first_two(fakes)
    answer = client.messages.create(
        model="everywhere", max_tokens=64, messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.content[0].text == "echo: hello" and answer.model == "everywhere"  # type: ignore[union-attr]
    fail_first_two(fakes)
    with client.messages.stream(
        model="everywhere", max_tokens=64, messages=[{"role": "user", "content": "hey"}]
    ) as stream:
        assert stream.get_final_text() == "echo: hey"
