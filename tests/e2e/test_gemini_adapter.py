"""Gemini and Vertex AI targets end to end (issue 10 items 1, 2, 4): the official `openai` and
`anthropic` SDKs → the aisix subprocess → the fake Gemini / Vertex / Google OAuth upstream.

Chat and Messages are translated per contract §7.3 both ways (streams included), tools go
out as functionDeclarations and come back as tool_calls / tool_use, images become inlineData,
finish reasons and usage (cached and thought tokens) are mapped and priced, Google errors
become the contract's §6.4 errors (feeding failover), Vertex tokens are minted from a
service account through the fake OAuth endpoint, and no secret reaches admin reads or errors.
One gateway serves the module; each test names its own models."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from e2e_helpers import Gateway, wait_for
from routing_lab import free_port

from fakes.gemini_upstream import FakeGeminiUpstream, GeminiReply, ServiceAccount, google_error

CALLER = "sk-gemini-caller"
API_KEY = "AIza-gemini-provider-secret"
MODEL = "gemini-2.5-flash"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGeminiUpstream]:
    with FakeGeminiUpstream() as upstream:
        upstream.api_key = API_KEY
        yield upstream


@pytest.fixture(scope="module")
def account(fake: FakeGeminiUpstream) -> ServiceAccount:
    account = ServiceAccount.generate()
    fake.trust(account)
    return account


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("gemini"), free_port, None).start()
    gateway.create_api_key(CALLER, ["*"])
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(autouse=True)
def _clean(fake: FakeGeminiUpstream) -> None:
    fake.reset()
    fake.access_tokens = set()  # Vertex: only tokens the fake OAuth endpoint minted


def ready(gw: Gateway, *aliases: str) -> None:
    def listed() -> bool:
        response = gw.proxy("GET", "/v1/models", api_key=CALLER)
        ids = {m["id"] for m in response.json.get("data", [])} if response.status == 200 else set()
        return set(aliases) <= ids

    wait_for(listed, 5.0, f"{aliases} to be callable")


def gemini_model(gw: Gateway, fake: FakeGeminiUpstream, **fields: Any) -> str:
    n = next(_names)
    pk = gw.create(
        "provider_keys",
        {
            "display_name": f"gemini-pk-{n}",
            "adapter": "gemini",
            "provider": "google",
            "secret": API_KEY,
            "api_base": fake.url + "/v1beta",
        },
    )
    alias = f"gemini-{n}"
    gw.create(
        "models",
        {
            "display_name": alias,
            "provider": "google",
            "model_name": fields.pop("model_name", MODEL),
            "provider_key_id": pk,
            **fields,
        },
    )
    ready(gw, alias)
    return alias


def vertex_secret(
    fake: FakeGeminiUpstream, account: ServiceAccount, project: str = "fake-project"
) -> str:
    """A service-account secret; one secret's providers share one token in the gateway."""
    return json.dumps(
        {
            "project": project,
            "region": "us-central1",
            "service_account_json": account.info("https://oauth2.googleapis.com/token"),
            "token_url": fake.token_url,
        }
    )


def vertex_model(gw: Gateway, fake: FakeGeminiUpstream, secret: str, **fields: Any) -> str:
    n = next(_names)
    pk = gw.create(
        "provider_keys",
        {
            "display_name": f"vertex-pk-{n}",
            "adapter": "vertex",
            "provider": "google",
            "secret": secret,
            "api_base": fake.url,
        },
    )
    alias = f"vertex-{n}"
    gw.create(
        "models",
        {
            "display_name": alias,
            "provider": "google",
            "model_name": fields.pop("model_name", MODEL),
            "provider_key_id": pk,
            **fields,
        },
    )
    ready(gw, alias)
    return alias


def oai(gw: Gateway, api_key: str = CALLER) -> openai.OpenAI:
    return gw.openai_client(api_key=api_key, max_retries=0, timeout=15)


def claude(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.proxy_url, api_key=CALLER, max_retries=0, timeout=15)


WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
USAGE = {
    "promptTokenCount": 1000,
    "candidatesTokenCount": 400,
    "thoughtsTokenCount": 100,
    "cachedContentTokenCount": 600,
    "totalTokenCount": 1500,
}


# --- chat, non-stream and stream ------------------------------------------------------------


def test_chat_is_translated_both_ways(gw: Gateway, fake: FakeGeminiUpstream) -> None:
    alias = gemini_model(gw, fake)
    fake.script(GeminiReply(usage=USAGE))
    raw = oai(gw).chat.completions.with_raw_response.create(
        model=alias,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello Gemini."},
        ],
        max_tokens=50,
        temperature=0.3,
        stop=["END"],
    )
    answer = raw.parse()
    assert answer.model == alias and answer.object == "chat.completion"
    assert answer.choices[0].message.content == "echo: Hello Gemini."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (1000, 500)
    assert answer.usage.total_tokens == 1500
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 600
    assert raw.headers["x-aisix-request-id"]

    [seen] = fake.model_requests()
    assert seen.path == f"/v1beta/models/{MODEL}:generateContent"
    assert seen.headers["x-goog-api-key"] == API_KEY
    assert "authorization" not in seen.headers
    assert seen.json == {
        "contents": [{"role": "user", "parts": [{"text": "Hello Gemini."}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 50, "temperature": 0.3, "stopSequences": ["END"]},
    }


def test_chat_stream_with_usage_chunk(gw: Gateway, fake: FakeGeminiUpstream) -> None:
    alias = gemini_model(gw, fake)
    fake.script(GeminiReply(content="one two three", usage=USAGE))
    stream = oai(gw).chat.completions.create(
        model=alias,
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert {c.model for c in chunks} == {alias}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == "stop" and reasons.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 1500
    [seen] = fake.model_requests()
    assert seen.path.endswith(":streamGenerateContent") and seen.query == "alt=sse"
    assert seen.headers["accept"] == "text/event-stream"


def test_stream_without_include_usage_ends_with_done(gw: Gateway, fake: FakeGeminiUpstream) -> None:
    alias = gemini_model(gw, fake)
    response = gw.proxy(
        "POST",
        "/v1/chat/completions",
        {"model": alias, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        api_key=CALLER,
    )
    assert response.status == 200
    data = response.sse_data()
    assert data[-1] == "[DONE]"
    assert all(orjson.loads(d)["choices"] for d in data[:-1])  # no usage-only chunk


# --- tools ----------------------------------------------------------------------------------


def test_tools_both_directions(gw: Gateway, fake: FakeGeminiUpstream) -> None:
    alias = gemini_model(gw, fake)
    fake.script(
        GeminiReply(
            content="",
            function_calls=[{"name": "get_weather", "args": {"city": "Paris"}}],
            thought_signature="c2lnbmF0dXJl",
        )
    )
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = oai(gw).chat.completions.create(
        model=alias, messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    sent = fake.model_requests()[0].json
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather of a city",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"city": {"type": "STRING"}},
                        "required": ["city"],
                    },
                }
            ]
        }
    ]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    fake.script(GeminiReply(content="Sunny, 21°C."))
    messages += [choice.message.model_dump(exclude_none=True)]
    messages += [{"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    final = oai(gw).chat.completions.create(model=alias, messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == "Sunny, 21°C."
    contents = fake.model_requests()[1].json["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": "c2lnbmF0dXJl",
            }
        ],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}],
    }


def test_streamed_tool_call(gw: Gateway, fake: FakeGeminiUpstream) -> None:
    alias = gemini_model(gw, fake)
    fake.script(
        GeminiReply(content="", function_calls=[{"name": "get_weather", "args": {"city": "Oslo"}}])
    )
    stream = oai(gw).chat.completions.create(
        model=alias,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    reasons = []
    for chunk in stream:
        if not chunk.choices:
            continue
        reasons.append(chunk.choices[0].finish_reason)
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "args": ""})
            entry["id"] += delta.id or ""
            if delta.function is not None:
                entry["name"] += delta.function.name or ""
                entry["args"] += delta.function.arguments or ""
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["args"]) == {"city": "Oslo"}
    assert reasons[-1] == "tool_calls"


# --- images and finish reasons --------------------------------------------------------------


def test_images_become_inline_data(gw: Gateway, fake: FakeGeminiUpstream) -> None:
    alias = gemini_model(gw, fake)
    oai(gw).chat.completions.create(
        model=alias,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                    {"type": "image_url", "image_url": {"url": "gs://bucket/cat.jpg"}},
                ],
            }
        ],
    )
    parts = fake.model_requests()[0].json["contents"][0]["parts"]
    assert parts == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("gemini", "openai_reason", "anthropic_reason"),
    [
        ("SAFETY", "content_filter", "refusal"),
        ("PROHIBITED_CONTENT", "content_filter", "refusal"),
        ("MAX_TOKENS", "length", "max_tokens"),
    ],
)
def test_finish_reasons(
    gw: Gateway, fake: FakeGeminiUpstream, gemini: str, openai_reason: str, anthropic_reason: str
) -> None:
    alias = gemini_model(gw, fake)
    fake.script(GeminiReply(content="partial", finish_reason=gemini))
    answer = oai(gw).chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "x"}]
    )
    assert answer.choices[0].finish_reason == openai_reason
    fake.script(GeminiReply(content="partial", finish_reason=gemini))
    message = claude(gw).messages.create(
        model=alias, max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert message.stop_reason == anthropic_reason


# --- Anthropic inbound ------------------------------------------------------------------------


def test_anthropic_messages_through_gemini(gw: Gateway, fake: FakeGeminiUpstream) -> None:
    alias = gemini_model(gw, fake)
    fake.script(
        GeminiReply(
            usage={"promptTokenCount": 12, "candidatesTokenCount": 4, "totalTokenCount": 16}
        )
    )
    message = claude(gw).messages.create(
        model=alias,
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello from Claude."}],
    )
    assert message.model == alias and message.stop_reason == "end_turn"
    assert message.content[0].text == "echo: Hello from Claude."  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 4)
    sent = fake.model_requests()[0].json
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["generationConfig"]["maxOutputTokens"] == 64

    fake.script(GeminiReply(content="streamed words here"))
    with claude(gw).messages.stream(
        model=alias, max_tokens=64, messages=[{"role": "user", "content": "Stream."}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "streamed words here" and final.model == alias
    assert final.stop_reason == "end_turn"


def test_anthropic_top_k_reaches_generation_config(gw: Gateway, fake: FakeGeminiUpstream) -> None:
    alias = gemini_model(gw, fake)
    claude(gw).messages.create(
        model=alias,
        max_tokens=16,
        extra_body={"top_k": 20},
        messages=[{"role": "user", "content": "x"}],
    )
    assert fake.model_requests()[0].json["generationConfig"]["topK"] == 20


def test_anthropic_tool_use_through_gemini(gw: Gateway, fake: FakeGeminiUpstream) -> None:
    alias = gemini_model(gw, fake)
    fake.script(
        GeminiReply(content="", function_calls=[{"name": "get_weather", "args": {"city": "Rome"}}])
    )
    tool: Any = {
        "name": "get_weather",
        "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    first = claude(gw).messages.create(
        model=alias,
        max_tokens=64,
        tools=[tool],
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    )
    assert first.stop_reason == "tool_use"
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Rome"}
    fake.script(GeminiReply(content="Warm."))
    second = claude(gw).messages.create(
        model=alias,
        max_tokens=64,
        tools=[tool],
        messages=[
            {"role": "user", "content": "Weather in Rome?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},  # type: ignore[list-item, misc]
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": use.id,
                        "content": "28C",
                    }
                ],
            },
        ],
    )
    assert second.content[0].text == "Warm."  # type: ignore[union-attr]
    response_part = fake.model_requests()[1].json["contents"][2]["parts"][0]
    assert response_part == {
        "functionResponse": {"name": "get_weather", "response": {"output": "28C"}}
    }


def test_responses_api_through_gemini(gw: Gateway, fake: FakeGeminiUpstream) -> None:
    alias = gemini_model(gw, fake)
    response = oai(gw).responses.create(
        model=alias, instructions="Be brief.", input="Hello Responses.", store=False
    )
    assert response.output_text == "echo: Hello Responses."
    assert response.model == alias
    sent = fake.model_requests()[0].json
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["contents"] == [{"role": "user", "parts": [{"text": "Hello Responses."}]}]


# --- usage and cost ---------------------------------------------------------------------------


def test_usage_and_cost_are_recorded_from_gemini_usage(
    gw: Gateway, fake: FakeGeminiUpstream
) -> None:
    pricing = {"input_per_million": 1000, "output_per_million": 2000}
    alias = gemini_model(gw, fake, pricing=pricing)
    plaintext = f"sk-cost-{alias}"
    key_id = gw.create_api_key(plaintext, [alias])
    ready_key(gw, plaintext, alias)
    fake.script(
        GeminiReply(
            usage={
                "promptTokenCount": 100,
                "candidatesTokenCount": 40,
                "thoughtsTokenCount": 10,
                "totalTokenCount": 150,
            }
        )
    )
    oai(gw, plaintext).chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "x"}]
    )

    def settled() -> dict[str, Any] | None:
        usage = gw.admin("GET", f"/apikeys/{key_id}/usage").json
        return usage if usage.get("requests") == 1 else None

    usage = wait_for(settled, 5.0, "usage to settle")
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (100, 50)
    # 100 × 1000/1e6 + 50 × 2000/1e6 USD
    assert usage["cost_usd"] == pytest.approx(0.2)


def ready_key(gw: Gateway, plaintext: str, alias: str) -> None:
    def listed() -> bool:
        response = gw.proxy("GET", "/v1/models", api_key=plaintext)
        return response.status == 200 and alias in {m["id"] for m in response.json["data"]}

    wait_for(listed, 5.0, "the key to propagate")


# --- errors and failover ----------------------------------------------------------------------


def test_upstream_400_keeps_status_and_google_message(
    gw: Gateway, fake: FakeGeminiUpstream
) -> None:
    alias = gemini_model(gw, fake)
    fake.script(GeminiReply.error(400, "* GenerateContentRequest.contents: bad part"))
    with pytest.raises(openai.BadRequestError) as caught:
        oai(gw).chat.completions.create(model=alias, messages=[{"role": "user", "content": "x"}])
    body: Any = caught.value.body
    assert caught.value.status_code == 400 and body["type"] == "upstream_error"
    assert "bad part" in body["message"] and body["code"] == "INVALID_ARGUMENT"
    assert API_KEY not in json.dumps(body)


def test_upstream_429_forwards_retry_after(gw: Gateway, fake: FakeGeminiUpstream) -> None:
    alias = gemini_model(gw, fake, retries=0)
    fake.script(GeminiReply.error(429, "Resource has been exhausted", retry_after=17))
    response = gw.proxy(
        "POST",
        "/v1/chat/completions",
        {"model": alias, "messages": [{"role": "user", "content": "x"}]},
        api_key=CALLER,
    )
    assert response.status == 429 and response.headers["retry-after"] == "17"
    assert response.json["error"]["type"] == "upstream_error"
    message = claude(gw)
    fake.script(GeminiReply.error(429, "Resource has been exhausted", retry_after=3))
    with pytest.raises(anthropic.RateLimitError) as caught:
        message.messages.create(
            model=alias, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.response.headers["retry-after"] == "3"
    # the real API puts its hint only in the body (google.rpc.RetryInfo): forwarded too
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36s"}
    body = google_error(429, "Resource has been exhausted", details=[info])
    fake.script(GeminiReply(status=429, json=body))
    hinted = gw.proxy(
        "POST",
        "/v1/chat/completions",
        {"model": alias, "messages": [{"role": "user", "content": "x"}]},
        api_key=CALLER,
    )
    assert hinted.status == 429 and hinted.headers["retry-after"] == "36"


def test_upstream_5xx_is_a_502_and_auth_failures_hide_the_secret(
    gw: Gateway, fake: FakeGeminiUpstream, account: ServiceAccount
) -> None:
    alias = gemini_model(gw, fake, retries=0)
    fake.script(GeminiReply.error(503, "The model is overloaded."))
    response = gw.proxy(
        "POST",
        "/v1/chat/completions",
        {"model": alias, "messages": [{"role": "user", "content": "x"}]},
        api_key=CALLER,
    )
    assert response.status == 502
    assert response.json["error"]["code"] == "upstream_server_error"
    assert "overloaded" not in response.text  # 5xx bodies are not shown

    given = json.dumps(
        {"project": "fake-project", "region": "us-central1", "access_token": "ya29.revoked-token"}
    )
    revoked = vertex_model(gw, fake, given, retries=0)
    response = gw.proxy(
        "POST",
        "/v1/chat/completions",
        {"model": revoked, "messages": [{"role": "user", "content": "x"}]},
        api_key=CALLER,
    )
    assert response.status == 502 and response.json["error"]["type"] == "upstream_auth_error"
    assert "ya29" not in response.text
    assert fake.model_requests()[-1].headers["authorization"] == "Bearer ya29.revoked-token"


def test_routing_fails_over_from_gemini_to_vertex(
    gw: Gateway, fake: FakeGeminiUpstream, account: ServiceAccount
) -> None:
    # no cooldown: the streamed round must try the failing target first again
    failing = gemini_model(gw, fake, retries=0, cooldown={"enabled": False})
    backup = vertex_model(gw, fake, vertex_secret(fake, account))
    name = f"google-route-{next(_names)}"
    gw.create(
        "models",
        {"display_name": name, "routing": {"targets": [{"model": failing}, {"model": backup}]}},
    )
    ready(gw, failing, backup)

    def propagated() -> bool:  # routing aliases are never listed: probe with a call
        response = gw.proxy(
            "POST",
            "/v1/chat/completions",
            {"model": name, "messages": [{"role": "user", "content": "ping"}]},
            api_key=CALLER,
        )
        return response.status != 404

    wait_for(propagated, 5.0, "the routing alias")
    for stream in (False, True):
        fake.reset()
        fake.access_tokens = set()
        fake.script(GeminiReply.error(503, "overloaded"))
        response = gw.proxy(
            "POST",
            "/v1/chat/completions",
            {"model": name, "messages": [{"role": "user", "content": "ping"}], "stream": stream},
            api_key=CALLER,
        )
        assert response.status == 200, response.text
        assert response.headers["x-aisix-served-by"] == backup
        if stream:
            data = response.sse_data()
            assert data[-1] == "[DONE]"
            chunks = [orjson.loads(d) for d in data[:-1]]
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        else:
            text = response.json["choices"][0]["message"]["content"]
        assert text == "echo: ping"
        first, second = fake.model_requests()
        assert first.path.startswith("/v1beta/models/")
        assert second.path.startswith("/v1/projects/fake-project/locations/us-central1/")


# --- Vertex credentials -----------------------------------------------------------------------


def test_vertex_service_account_token_is_minted_once_and_reused(
    gw: Gateway, fake: FakeGeminiUpstream, account: ServiceAccount
) -> None:
    alias = vertex_model(gw, fake, vertex_secret(fake, account, project="mint-once"))
    for text in ("one", "two", "three"):
        answer = oai(gw).chat.completions.create(
            model=alias, messages=[{"role": "user", "content": text}]
        )
        assert answer.choices[0].message.content == f"echo: {text}"
    grants = [g for g in fake.grants if g.issued]
    assert len(grants) == 1 and grants[0].claims["iss"] == account.email
    seen = fake.model_requests()
    assert {r.headers["authorization"] for r in seen} == {f"Bearer {grants[0].issued}"}
    assert seen[0].path == (
        f"/v1/projects/mint-once/locations/us-central1/publishers/google/models/{MODEL}"
        ":generateContent"
    )


def test_secrets_never_in_admin_reads_or_logs(
    gw: Gateway, fake: FakeGeminiUpstream, account: ServiceAccount
) -> None:
    gemini_model(gw, fake)
    vertex_model(gw, fake, vertex_secret(fake, account))
    listing = gw.admin("GET", "/provider_keys")
    assert listing.status == 200
    assert API_KEY not in listing.text and "PRIVATE KEY" not in listing.text
    values = [item["value"] for item in listing.json.get("list", listing.json.get("items", []))]
    assert values and all(v["secret"] == "***" for v in values)
    logs = gw.stdout_text() + gw.stderr_text()
    assert API_KEY not in logs and "PRIVATE KEY" not in logs
    assert not any(g.issued and g.issued in logs for g in fake.grants)


# --- embeddings -------------------------------------------------------------------------------


def test_embeddings_through_gemini_and_vertex(
    gw: Gateway, fake: FakeGeminiUpstream, account: ServiceAccount
) -> None:
    alias = gemini_model(gw, fake, model_name="gemini-embedding-001")
    result = oai(gw).embeddings.create(model=alias, input=["alpha", "beta", "gamma"], dimensions=4)
    assert result.model == alias
    assert [d.index for d in result.data] == [0, 1, 2]
    assert all(len(d.embedding) == 4 for d in result.data)
    assert result.data[0].embedding != result.data[1].embedding
    [seen] = fake.model_requests()
    assert seen.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    single = oai(gw).embeddings.create(model=alias, input="alpha", dimensions=4)
    assert single.data[0].embedding == result.data[0].embedding
    assert fake.model_requests()[-1].path.endswith(":embedContent")

    vertex_alias = vertex_model(
        gw, fake, vertex_secret(fake, account), model_name="text-embedding-005"
    )
    predicted = oai(gw).embeddings.create(model=vertex_alias, input=["alpha", "beta"])
    assert len(predicted.data) == 2 and predicted.usage.prompt_tokens > 0
    assert fake.model_requests()[-1].path.endswith("/models/text-embedding-005:predict")


def test_completions_are_not_served_by_gemini(gw: Gateway, fake: FakeGeminiUpstream) -> None:
    alias = gemini_model(gw, fake)
    response = gw.proxy("POST", "/v1/completions", {"model": alias, "prompt": "x"}, api_key=CALLER)
    assert response.status == 501 and response.json["error"]["type"] == "not_implemented"
    assert fake.model_requests() == []


def test_mid_stream_error_chunk_ends_the_stream_with_an_error_event(
    gw: Gateway, fake: FakeGeminiUpstream
) -> None:
    alias = gemini_model(gw, fake, retries=0)
    first = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Partial"}]}}]}
    error = {"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}
    release = threading.Event()  # the error is sent once the client has the first chunk
    frames = [f"data: {json.dumps(first)}\r\n\r\n", f"data: {json.dumps(error)}\r\n\r\n"]
    fake.script(GeminiReply(sse_frames=frames, hold=release))
    stream = oai(gw).chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "x"}], stream=True
    )
    text = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
            release.set()
    assert text == "Partial"
    assert "upstream returned 500" in caught.value.message
    assert len(fake.model_requests()) == 1  # after the first byte there is no retry
