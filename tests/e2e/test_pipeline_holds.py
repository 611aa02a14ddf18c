"""Every hold is finished exactly once (issue 12 items 2 and 4), and the response headers and
model lookup the SDKs rely on (issue 11 item 3), through a real gateway process."""

from __future__ import annotations

import socket
import time
from typing import Any

import orjson
from e2e_helpers import ALIAS, CALLER_KEY, PROVIDER_SECRET, Gateway, wait_for

from fakes.openai_upstream import FakeOpenAIUpstream, Reply

CHAT = {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": ALIAS, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
ONE_SLOT = "sk-one-slot"


def one_slot_gateway(gateway: Any, fake: FakeOpenAIUpstream) -> Gateway:
    gw: Gateway = gateway()
    gw.seed(fake.url)
    gw.create_api_key(ONE_SLOT, [ALIAS], rate_limit={"concurrency": 1})
    gw.wait_for_key(ONE_SLOT)
    return gw


def test_malformed_upstream_answer_is_502_and_releases_the_slot(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = one_slot_gateway(gateway, fake_openai)
    bad = {"id": "x", "choices": [{"message": {"content": "x", "tool_calls": 5}}]}
    for body in (bad, {"choices": [{"message": {"content": "x"}, "finish_reason": [1]}]}):
        fake_openai.script(*[Reply(json=body)] * 3)  # a decode error is retried twice
        answer = gw.proxy("POST", "/v1/messages", MESSAGES, api_key=ONE_SLOT)
        assert answer.status == 502, answer.text
        assert answer.json["type"] == "error"
        assert answer.json["error"]["type"] == "api_error"
    # the concurrency slot came back: a good call is admitted at once
    ok = gw.proxy("POST", "/v1/messages", MESSAGES, api_key=ONE_SLOT)
    assert ok.status == 200, ok.text
    assert ok.json["content"][0]["text"] == "echo: hi"


def test_non_stream_hang_up_releases_the_slot_and_the_upstream_call(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = one_slot_gateway(gateway, fake_openai)
    fake_openai.script(Reply(delay_s=20))
    payload = orjson.dumps(CHAT)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ONE_SLOT}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection((gw.proxy_host, gw.proxy_port))
    sock.sendall(head + payload)
    fake_openai.wait_for_requests(1)
    busy = gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=ONE_SLOT)
    assert busy.status == 429  # the hung call holds the only slot
    sock.close()
    started = time.monotonic()

    def admitted() -> bool:
        return gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=ONE_SLOT).status == 200

    wait_for(admitted, timeout=5.0, message="the slot to be released after the hang-up")
    assert time.monotonic() - started < 5.0
    wait_for(
        lambda: any(r.get("status") == 499 for r in gw.access_log_lines()),
        timeout=5.0,
        message="a 499 access-log line for the abandoned call",
    )


def test_request_id_headers_and_model_lookup(gateway: Any, fake_openai: FakeOpenAIUpstream) -> None:
    gw: Gateway = gateway()
    gw.seed(fake_openai.url)
    answer = gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=CALLER_KEY)
    rid = answer.headers["x-aisix-request-id"]
    assert answer.headers["x-request-id"] == rid == answer.headers["request-id"]
    client = gw.openai_client()
    raw = client.chat.completions.with_raw_response.create(
        model=ALIAS, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.request_id == raw.headers["x-aisix-request-id"]
    model = client.models.retrieve(ALIAS)
    assert (model.id, model.object, model.owned_by) == (ALIAS, "model", "openai")
    missing = gw.proxy("GET", "/v1/models/not-there", api_key=CALLER_KEY)
    assert missing.status == 404 and missing.json["error"]["type"] == "model_not_found"
    gw.create_api_key("sk-nothing", [])
    gw.wait_for_key(CALLER_KEY)
    time.sleep(0.2)
    hidden = gw.proxy("GET", f"/v1/models/{ALIAS}", api_key="sk-nothing")
    assert hidden.status == 404
    wrong = gw.proxy("DELETE", f"/v1/models/{ALIAS}", api_key=CALLER_KEY)
    assert wrong.status == 405 and wrong.headers["allow"] == "GET"


def test_translated_max_tokens_clamped_to_the_model_limit(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw: Gateway = gateway()
    pk = gw.create_provider_key(fake_openai.url)
    gw.create_model(ALIAS, pk, limits={"max_output_tokens": 100})
    gw.create_api_key(CALLER_KEY, [ALIAS])
    gw.wait_for_key(CALLER_KEY)
    big = {**MESSAGES, "max_tokens": 5000}
    assert gw.proxy("POST", "/v1/messages", big, api_key=CALLER_KEY).status == 200
    assert fake_openai.model_requests()[-1].json["max_tokens"] == 100
    small = {**MESSAGES, "max_tokens": 40}
    assert gw.proxy("POST", "/v1/messages", small, api_key=CALLER_KEY).status == 200
    assert fake_openai.model_requests()[-1].json["max_tokens"] == 40
    # same-family calls are relayed as sent: the limit is the upstream's business there
    chat = {**CHAT, "max_tokens": 5000}
    assert gw.proxy("POST", "/v1/chat/completions", chat, api_key=CALLER_KEY).status == 200
    assert fake_openai.model_requests()[-1].json["max_tokens"] == 5000


def test_translation_drops_are_counted(gateway: Any, fake_openai: FakeOpenAIUpstream) -> None:
    gw: Gateway = gateway()
    gw.seed(fake_openai.url)
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    body = {
        **MESSAGES,
        "top_k": 5,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [thinking, {"type": "text", "text": "yo"}]},
            {"role": "user", "content": "again"},
        ],
    }
    assert gw.proxy("POST", "/v1/messages", body, api_key=CALLER_KEY).status == 200
    sent = fake_openai.model_requests()[-1].json
    assert "top_k" not in sent and "thinking" not in str(sent["messages"])

    def counted() -> bool:
        top_k = gw.metric("aisix_translation_dropped_total", family="openai", field="top_k")
        thought = gw.metric("aisix_translation_dropped_total", family="openai", field="thinking")
        return top_k == 1 and thought == 1

    wait_for(counted, message="the dropped top_k and thinking block in the metric")


def test_provider_secret_redacted_from_a_mid_stream_error(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw: Gateway = gateway()
    gw.seed(fake_openai.url)
    first = {"id": "c", "object": "chat.completion.chunk", "model": "m",
             "choices": [{"index": 0, "delta": {"content": "hi"}}]}  # fmt: skip
    leak = {"error": {"message": f"upstream rejected key {PROVIDER_SECRET} mid-stream"}}
    frames = [
        f"data: {orjson.dumps(first).decode()}\n\n",
        f"data: {orjson.dumps(leak).decode()}\n\n",
    ]
    fake_openai.script(Reply(sse_frames=frames, chunk_delay_s=0.2))  # the head goes out first
    streamed = gw.proxy(
        "POST", "/v1/chat/completions", {**CHAT, "stream": True}, api_key=CALLER_KEY
    )
    assert streamed.status == 200
    last = orjson.loads(streamed.sse_data()[-1])
    assert PROVIDER_SECRET not in streamed.text
    assert "***" in last["error"]["message"]


def test_a_stream_error_before_the_first_byte_is_502(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw: Gateway = gateway()
    gw.seed(fake_openai.url)
    fail = {"error": {"message": "model overloaded", "type": "server_error"}}
    fake_openai.script(*[Reply(sse_frames=[f"data: {orjson.dumps(fail).decode()}\n\n"])] * 3)
    answer = gw.proxy("POST", "/v1/chat/completions", {**CHAT, "stream": True}, api_key=CALLER_KEY)
    assert answer.status == 502, answer.text
    assert answer.json["error"] == {"message": "model overloaded", "type": "upstream_error"}
