"""`POST /v1/responses` with the official openai SDK (issue 11 item 1): translated to chat for
an OpenAI-compatible server without the Responses API, relayed as is to one that has it;
stored answers, `previous_response_id`, GET and DELETE scoped to the calling key."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from e2e_helpers import ALIAS, CALLER_KEY, Gateway

from fakes.openai_upstream import FakeOpenAIUpstream, Reply

TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_fake_upstream_speaks_the_responses_api(fake_openai: FakeOpenAIUpstream) -> None:
    """The fake's /v1/responses is parsed by the official SDK, plain and streamed."""
    client = openai.OpenAI(base_url=fake_openai.url + "/v1", api_key="x", max_retries=0)
    answer = client.responses.create(model="m", input="ping")
    assert answer.output_text == "echo: ping"
    assert answer.usage is not None and answer.usage.output_tokens > 0
    with client.responses.stream(model="m", input="ping") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "echo: ping" == final.output_text


def translated(gateway: Any, fake: FakeOpenAIUpstream) -> tuple[Gateway, openai.OpenAI]:
    gw: Gateway = gateway()
    gw.seed(fake.url)  # api_base is not OpenAI's: no Responses API there, so chat is used
    return gw, gw.openai_client()


def test_translated_plain_answer(gateway: Any, fake_openai: FakeOpenAIUpstream) -> None:
    gw, client = translated(gateway, fake_openai)
    answer = client.responses.create(
        model=ALIAS,
        input="Hello there",
        instructions="Be brief.",
        max_output_tokens=50,
        text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
    )
    assert answer.output_text == "echo: Hello there"
    assert answer.model == ALIAS and answer.status == "completed"
    assert answer.usage is not None and answer.usage.input_tokens > 0
    sent = fake_openai.model_requests()[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent.json["messages"][1] == {"role": "user", "content": "Hello there"}
    assert sent.json["max_tokens"] == 50
    assert sent.json["response_format"]["type"] == "json_schema"
    # stored for this key, invisible to another
    again = client.responses.retrieve(answer.id)
    assert again.output_text == answer.output_text
    gw.create_api_key("sk-other", [ALIAS])
    gw.wait_for_key("sk-other")
    other = gw.openai_client(api_key="sk-other")
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(answer.id)
    deleted = gw.proxy("DELETE", f"/v1/responses/{answer.id}", api_key=CALLER_KEY)
    assert deleted.status == 200 and deleted.json["deleted"] is True
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(answer.id)


def test_translated_stream_event_sequence(gateway: Any, fake_openai: FakeOpenAIUpstream) -> None:
    _, client = translated(gateway, fake_openai)
    with client.responses.stream(model=ALIAS, input="stream me") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        "echo: stream me"
    )
    assert final.output_text == "echo: stream me" and final.model == ALIAS
    assert final.usage is not None and final.usage.total_tokens > 0
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_translated_tool_call_and_previous_response(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    _, client = translated(gateway, fake_openai)
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    fake_openai.script(
        Reply(
            json={
                "id": "c1",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
        )
    )
    first = client.responses.create(model=ALIAS, input="Weather in Paris?", tools=[TOOL])  # type: ignore[list-item]
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].call_id == "call_1" and calls[0].arguments == '{"city": "Paris"}'
    sent = fake_openai.model_requests()[-1].json
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    second = client.responses.create(
        model=ALIAS,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
    )
    assert second.previous_response_id == first.id
    history = fake_openai.model_requests()[-1].json["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[1]["tool_calls"][0]["id"] == "call_1"
    assert history[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=ALIAS, previous_response_id="resp_unknown", input="x")


def test_native_responses_upstream_is_relayed(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw: Gateway = gateway()
    pk = gw.create_provider_key(fake_openai.url, capabilities={"responses": True})
    gw.create_model(ALIAS, pk)
    gw.create_api_key(CALLER_KEY, [ALIAS])
    gw.wait_for_key(CALLER_KEY)
    client = gw.openai_client()
    answer = client.responses.create(model=ALIAS, input="native", store=False)
    assert answer.output_text == "echo: native" and answer.model == ALIAS
    sent = fake_openai.model_requests()[-1]
    assert sent.path == "/v1/responses" and sent.json["model"] == "gpt-4o"
    assert "stream_options" not in sent.json
    with client.responses.stream(model=ALIAS, input="native stream") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "echo: native stream" and final.model == ALIAS
    usage = gw.admin("GET", "/usage?group_by=api_key").json["rows"]
    assert usage and usage[0]["requests"] >= 2
