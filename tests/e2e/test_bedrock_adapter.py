"""The `bedrock` adapter (issue 10 item 3): the fake Bedrock runtime proven with boto3, then
the openai and anthropic SDKs through aisix to it (Converse, ConverseStream, tools, usage and
cost, errors, a corrupt event-stream frame), SigV4 checked by the fake on every call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import boto3
import openai
import orjson
import pytest
from e2e_helpers import ALIAS, CALLER_KEY, Gateway, wait_for

from fakes.bedrock_upstream import ACCESS_KEY, REGION, SECRET_KEY, BedrockReply, FakeBedrock

MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
SECRET = orjson.dumps(
    {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "region": REGION}
).decode()


@pytest.fixture
def bedrock() -> Iterator[FakeBedrock]:
    fake = FakeBedrock().start()
    try:
        yield fake
    finally:
        fake.stop()


def boto(fake: FakeBedrock, secret: str = SECRET_KEY) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=fake.url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=secret,
    )


def test_fake_bedrock_speaks_converse_to_boto3(bedrock: FakeBedrock) -> None:
    client = boto(bedrock)
    messages = [{"role": "user", "content": [{"text": "ping"}]}]
    answer = client.converse(modelId=MODEL_ID, messages=messages)
    assert answer["output"]["message"]["content"][0]["text"] == "echo: ping"
    assert answer["stopReason"] == "end_turn"
    stream = client.converse_stream(modelId=MODEL_ID, messages=messages)["stream"]
    events = list(stream)
    text = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    assert text == "echo: ping"
    assert events[-1]["metadata"]["usage"]["totalTokens"] == 8
    assert all(r.signature_ok for r in bedrock.requests)
    embedded = client.invoke_model(
        modelId="amazon.titan-embed-text-v2:0", body=b'{"inputText": "x"}'
    )
    assert len(orjson.loads(embedded["body"].read())["embedding"]) == 4
    with pytest.raises(client.exceptions.ClientError):
        boto(bedrock, secret="wrong").converse(modelId=MODEL_ID, messages=messages)


def bedrock_gateway(gateway: Any, fake: FakeBedrock, **model: Any) -> Gateway:
    gw: Gateway = gateway()
    pk = gw.create(
        "provider_keys",
        {
            "display_name": "bedrock",
            "adapter": "bedrock",
            "provider": "bedrock",
            "secret": SECRET,
            "api_base": fake.url,
        },
    )
    gw.create_model(ALIAS, pk, model_name=MODEL_ID, provider="bedrock", **model)
    gw.create_api_key(CALLER_KEY, [ALIAS, "embed"])
    gw.wait_for_key(CALLER_KEY)
    return gw


def test_openai_chat_to_bedrock(gateway: Any, bedrock: FakeBedrock) -> None:
    gw = bedrock_gateway(
        gateway, bedrock, pricing={"input_per_million": 3, "output_per_million": 15}
    )
    client = gw.openai_client()
    answer = client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        max_tokens=64,
        temperature=0.2,
        stop=["END"],
    )
    assert answer.choices[0].message.content == "echo: hi"
    assert answer.model == ALIAS and answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens == 8
    seen = bedrock.requests[-1]
    assert seen.signature_ok and seen.path == f"/model/{MODEL_ID}/converse"
    assert seen.json["system"] == [{"text": "Be brief."}]
    assert seen.json["inferenceConfig"] == {
        "maxTokens": 64,
        "temperature": 0.2,
        "stopSequences": ["END"],
    }
    assert SECRET_KEY not in str(gw.admin("GET", "/provider_keys").json)
    stream = client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "stream"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8

    def both_counted() -> Any:
        rows = gw.admin("GET", "/usage?group_by=model").json["rows"]
        return rows[0] if rows and rows[0]["requests"] == 2 else None

    usage = wait_for(both_counted, message="both calls in the usage ledger")
    assert usage["cost_usd"] == pytest.approx(2 * (5 * 3 + 3 * 15) / 1e6)


def test_tools_both_directions(gateway: Any, bedrock: FakeBedrock) -> None:
    gw = bedrock_gateway(gateway, bedrock)
    use = {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}
    bedrock.script(BedrockReply(content="", tool_use=use), BedrockReply(content="", tool_use=use))
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    client = gw.openai_client()
    answer = client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,
        tool_choice="required",
    )
    call = answer.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, orjson.loads(call.function.arguments)) == (
        "tooluse_1",
        "get_weather",
        {"city": "Paris"},
    )
    assert answer.choices[0].finish_reason == "tool_calls"
    assert bedrock.requests[-1].json["toolConfig"]["toolChoice"] == {"any": {}}
    streamed = list(
        client.chat.completions.create(
            model=ALIAS,
            messages=[{"role": "user", "content": "weather?"}],
            tools=tools,
            stream=True,
        )
    )
    fragments = [tc for c in streamed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert fragments[0].id == "tooluse_1" and fragments[0].function.name == "get_weather"
    assert orjson.loads("".join(f.function.arguments or "" for f in fragments)) == {"city": "Paris"}
    client.chat.completions.create(
        model=ALIAS,
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "tooluse_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "sunny"},
        ],
        tools=tools,
    )
    turns = bedrock.requests[-1].json["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][0]["toolUse"]["input"] == {"city": "Paris"}
    assert turns[2]["content"][0]["toolResult"] == {
        "toolUseId": "tooluse_1",
        "content": [{"text": "sunny"}],
        "status": "success",
    }


def test_anthropic_messages_to_bedrock(gateway: Any, bedrock: FakeBedrock) -> None:
    gw = bedrock_gateway(gateway, bedrock)
    client = anthropic.Anthropic(base_url=gw.proxy_url, api_key=CALLER_KEY, max_retries=0)
    answer = client.messages.create(
        model=ALIAS, max_tokens=32, messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.content[0].text == "echo: hello" and answer.stop_reason == "end_turn"  # type: ignore[union-attr]
    with client.messages.stream(
        model=ALIAS, max_tokens=32, messages=[{"role": "user", "content": "hey"}]
    ) as stream:
        assert stream.get_final_text() == "echo: hey"


def test_errors_and_corrupt_frames(gateway: Any, bedrock: FakeBedrock) -> None:
    gw = bedrock_gateway(gateway, bedrock, retries=0)
    client = gw.openai_client(max_retries=0)
    bedrock.script(BedrockReply(status=429, error_type="ThrottlingException", message="slow down"))
    with pytest.raises(openai.RateLimitError) as throttled:
        client.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "x"}])
    assert "slow down" in str(throttled.value)
    bedrock.script(BedrockReply(status=400, error_type="ValidationException", message="bad input"))
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "x"}])
    assert "bad input" in str(invalid.value)
    bedrock.script(BedrockReply(corrupt_frame=2))
    raw = gw.proxy(
        "POST",
        "/v1/chat/completions",
        {"model": ALIAS, "stream": True, "messages": [{"role": "user", "content": "abcdef"}]},
        api_key=CALLER_KEY,
    )
    events = raw.sse_data()
    assert raw.status == 200 and "[DONE]" not in events
    assert orjson.loads(events[-1])["error"]["type"] == "upstream_error"


def test_embeddings_titan_and_cohere(gateway: Any, bedrock: FakeBedrock) -> None:
    gw = bedrock_gateway(gateway, bedrock)
    pk_id = gw.admin("GET", "/provider_keys").json["list"][0]["id"]
    gw.create_model("embed", pk_id, model_name="amazon.titan-embed-text-v2:0", provider="bedrock")
    gw.wait_for_key(CALLER_KEY, "embed")
    client = gw.openai_client()
    one = client.embeddings.create(model="embed", input="hello", dimensions=4)
    assert len(one.data) == 1 and len(one.data[0].embedding) == 4 and one.model == "embed"
    assert bedrock.requests[-1].json == {"inputText": "hello", "dimensions": 4}
