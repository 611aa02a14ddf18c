"""The fake OpenAI upstream and the demo upstream behave as scripted (no gateway involved)."""

from __future__ import annotations

import asyncio
import base64
import http.client
import math
import struct
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from aisix import demo_upstream as demo
from fakes.openai_upstream import FakeOpenAIUpstream, Reply

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}


def post(
    url: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def sse_payloads(raw: bytes) -> list[str]:
    return [
        event[len("data: ") :] for event in raw.decode().split("\n\n") if event.startswith("data: ")
    ]


def test_default_chat_answer_echoes_model_and_message(fake_openai: FakeOpenAIUpstream) -> None:
    status, headers, raw = post(fake_openai.url + "/v1/chat/completions", CHAT)
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    body = orjson.loads(raw)
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "echo: hello there",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    prompt = math.ceil(len(b"hello there") / 4)
    completion = math.ceil(len(b"echo: hello there") / 4)
    assert body["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def test_requests_are_recorded(fake_openai: FakeOpenAIUpstream) -> None:
    post(fake_openai.url + "/v1/chat/completions?x=1", CHAT, {"Authorization": "Bearer sk-up"})
    [recorded] = fake_openai.wait_for_requests(1)
    assert recorded.method == "POST"
    assert recorded.path == "/v1/chat/completions"
    assert recorded.query == "x=1"
    assert recorded.headers["authorization"] == "Bearer sk-up"
    assert recorded.json == CHAT
    assert orjson.loads(recorded.body) == CHAT
    assert fake_openai.model_requests() == [recorded]


def test_stream_with_and_without_usage(fake_openai: FakeOpenAIUpstream) -> None:
    url = fake_openai.url + "/v1/chat/completions"
    status, headers, raw = post(url, {**CHAT, "stream": True})
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(raw)
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert all(c["model"] == "gpt-4o" and c["choices"] for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == (
        "echo: hello there"
    )
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)

    _, _, raw = post(url, {**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    payloads = sse_payloads(raw)
    assert payloads[-1] == "[DONE]"
    last = orjson.loads(payloads[-2])
    assert last["choices"] == []
    assert last["usage"]["total_tokens"] == (
        last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
    )


def test_completions_json_and_stream(fake_openai: FakeOpenAIUpstream) -> None:
    url = fake_openai.url + "/v1/completions"
    status, _, raw = post(url, {"model": "gpt-3.5-turbo-instruct", "prompt": "say hi"})
    body = orjson.loads(raw)
    assert status == 200
    assert body["object"] == "text_completion"
    assert body["model"] == "gpt-3.5-turbo-instruct"
    assert body["choices"][0]["text"] == "echo: say hi"
    assert body["usage"]["prompt_tokens"] == math.ceil(len(b"say hi") / 4)

    stream_body = {
        "model": "m",
        "prompt": "say hi",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, _, raw = post(url, stream_body)
    payloads = sse_payloads(raw)
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert chunks[-1]["choices"] == [] and "usage" in chunks[-1]
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "echo: say hi"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_embeddings_float_base64_and_order(fake_openai: FakeOpenAIUpstream) -> None:
    url = fake_openai.url + "/v1/embeddings"
    inputs = ["alpha", "beta", "gamma"]
    _, _, raw = post(url, {"model": "text-embedding-3-small", "input": inputs})
    body = orjson.loads(raw)
    assert body["object"] == "list"
    assert body["model"] == "text-embedding-3-small"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    vectors = [d["embedding"] for d in body["data"]]
    assert vectors == [demo.embedding_vector(s, demo.DEFAULT_EMBEDDING_DIMENSIONS) for s in inputs]
    assert len({tuple(v) for v in vectors}) == 3

    _, _, raw = post(
        url, {"model": "e", "input": "alpha", "encoding_format": "base64", "dimensions": 4}
    )
    [item] = orjson.loads(raw)["data"]
    decoded = list(struct.unpack("<4f", base64.b64decode(item["embedding"])))
    assert decoded == demo.embedding_vector("alpha", 4)

    _, _, raw = post(url, {"model": "e", "input": [[1, 2, 3], [4, 5]]})
    body = orjson.loads(raw)
    assert len(body["data"]) == 2
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


def test_models_list(fake_openai: FakeOpenAIUpstream) -> None:
    with urllib.request.urlopen(fake_openai.url + "/v1/models", timeout=5) as resp:
        body = orjson.loads(resp.read())
    assert body["object"] == "list"
    assert "gpt-4o" in [m["id"] for m in body["data"]]


def test_scripted_error_with_retry_after_then_default(fake_openai: FakeOpenAIUpstream) -> None:
    fake_openai.script(
        Reply.error(429, "slow down", "rate_limit_error", code="rate_limited", retry_after=2),
        Reply.error(503),
    )
    url = fake_openai.url + "/v1/chat/completions"
    status, headers, raw = post(url, CHAT)
    assert status == 429
    assert headers["retry-after"] == "2"
    assert orjson.loads(raw)["error"] == {
        "message": "slow down",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limited",
    }
    status, _, raw = post(url, CHAT)
    assert status == 503
    assert "error" in orjson.loads(raw)
    assert post(url, CHAT)[0] == 200
    assert fake_openai.pending_replies() == 0


def test_delay_before_headers(fake_openai: FakeOpenAIUpstream) -> None:
    fake_openai.script(Reply(delay_s=0.3))
    started = time.monotonic()
    assert post(fake_openai.url + "/v1/chat/completions", CHAT)[0] == 200
    assert time.monotonic() - started >= 0.3


def test_delay_between_chunks(fake_openai: FakeOpenAIUpstream) -> None:
    fake_openai.script(Reply(chunk_delay_s=0.05, chunks=4))
    started = time.monotonic()
    _, _, raw = post(fake_openai.url + "/v1/chat/completions", {**CHAT, "stream": True})
    # role + 4 content + finish + [DONE] = 7 events, 6 gaps
    assert len(sse_payloads(raw)) == 7
    assert time.monotonic() - started >= 6 * 0.05


def test_stream_cut_drops_connection(fake_openai: FakeOpenAIUpstream) -> None:
    fake_openai.script(Reply(cut_after_chunks=2))
    conn = http.client.HTTPConnection("127.0.0.1", fake_openai.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", orjson.dumps({**CHAT, "stream": True}))
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead) as info:
        response.read()
    assert len(sse_payloads(info.value.partial)) == 2
    conn.close()
    assert post(fake_openai.url + "/v1/chat/completions", CHAT)[0] == 200  # server still fine


def test_drop_connection_before_answer(fake_openai: FakeOpenAIUpstream) -> None:
    fake_openai.script(Reply(drop_connection=True))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        post(fake_openai.url + "/v1/chat/completions", CHAT)


def test_malformed_body(fake_openai: FakeOpenAIUpstream) -> None:
    fake_openai.script(Reply(raw_body=b'{"id": "chatcmpl-1", "choices": ['))
    status, _, raw = post(fake_openai.url + "/v1/chat/completions", CHAT)
    assert status == 200
    assert raw == b'{"id": "chatcmpl-1", "choices": ['
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)


def test_omit_done_and_omit_usage(fake_openai: FakeOpenAIUpstream) -> None:
    url = fake_openai.url + "/v1/chat/completions"
    stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    fake_openai.script(Reply(omit_done=True), Reply(omit_usage=True), Reply(omit_usage=True))
    payloads = sse_payloads(post(url, stream)[2])
    assert "[DONE]" not in payloads
    assert orjson.loads(payloads[-1])["choices"] == []  # usage chunk still there
    payloads = sse_payloads(post(url, stream)[2])
    assert payloads[-1] == "[DONE]"
    assert all("usage" not in orjson.loads(p) for p in payloads[:-1])
    assert "usage" not in orjson.loads(post(url, CHAT)[2])


def test_raw_sse_frames_and_overrides(fake_openai: FakeOpenAIUpstream) -> None:
    frames = [": comment\n\n", 'data: {"not": "a chunk"}\n\n', "data: {broken\n\n"]
    usage = {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33}
    fake_openai.script(Reply(sse_frames=frames), Reply(content="custom", usage=usage))
    url = fake_openai.url + "/v1/chat/completions"
    status, headers, raw = post(url, {**CHAT, "stream": True})
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert raw == "".join(frames).encode()
    body = orjson.loads(post(url, CHAT)[2])
    assert body["choices"][0]["message"]["content"] == "custom"
    assert body["usage"] == usage


def test_openai_sdk_against_fake(fake_openai: FakeOpenAIUpstream) -> None:
    client = openai.OpenAI(base_url=fake_openai.url + "/v1", api_key="sk-x", max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "echo: hi"
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    embedded = client.embeddings.create(model="e", input=["a", "b"])  # SDK asks for base64
    assert [d.embedding for d in embedded.data] == [
        demo.embedding_vector(s, demo.DEFAULT_EMBEDDING_DIMENSIONS) for s in ("a", "b")
    ]
    assert fake_openai.model_requests()[-1].json["encoding_format"] == "base64"
    assert [m.id for m in client.models.list()] == list(demo.DEMO_MODELS)


def test_demo_upstream_app() -> None:
    async def scenario() -> None:
        runner = web.AppRunner(demo.build_app(chunks=3))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}/v1"
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(base + "/chat/completions", json=CHAT) as resp:
                    body = await resp.json()
                    assert body["model"] == "gpt-4o"
                    assert body["choices"][0]["message"]["content"] == "echo: hello there"
                stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
                async with session.post(base + "/chat/completions", json=stream) as resp:
                    payloads = sse_payloads(await resp.read())
                    assert payloads[-1] == "[DONE]"
                    assert len(payloads) == 1 + 3 + 1 + 1 + 1  # role, 3 parts, stop, usage, DONE
                async with session.post(base + "/chat/completions", data=b"{nope") as resp:
                    assert resp.status == 400
                    assert (await resp.json())["error"]["type"] == "invalid_request_error"
                async with session.post(
                    base + "/embeddings", json={"model": "e", "input": ["x", "y"]}
                ) as resp:
                    assert len((await resp.json())["data"]) == 2
                async with session.get(base + "/models") as resp:
                    assert resp.status == 200
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
