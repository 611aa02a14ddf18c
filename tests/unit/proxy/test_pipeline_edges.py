"""The pipeline's refusals and side paths, in-process over `MockTransport`.

Before any upstream call: authentication (401), body limit (413), bad JSON (400), unknown
alias (404), allowlist and `allowed_cidrs` (403), no snapshot yet (503), wrong method (405),
unknown route (404). Per attempt: a target refused by its own limits is skipped for the next
one (or answers 429 when none is left), an endpoint a target cannot serve is 501,
count_tokens is estimated locally or relayed, a model's `max_output_tokens` caps a translated
request, the egress proxy is chosen per attempt. Streams get `: ping` keepalives while the
upstream is silent. Request ids from the client are echoed; `/livez`, `/readyz`, `/v1/models`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from aisix.snapshot import Record, SnapshotHolder
from fakes.pipeline_rig import (
    ANTHROPIC_HOST,
    CALLER,
    CLAUDE,
    GPT,
    GPT_FIRST,
    OPENAI_HOST,
    Rig,
    chat,
    json_reply,
    messages,
    openai_chat,
    openai_stream,
    sha256,
    sse_reply,
)

pytestmark = pytest.mark.anyio
NARROW = "sk-rig-narrow"
DISABLED, EXPIRED = "sk-rig-disabled", "sk-rig-expired"


def extra_records() -> list[Record]:
    gpt_one = {
        "display_name": "gpt-one-slot",
        "provider": "openai",
        "model_name": "gpt-4o",
        "provider_key_id": "pk-openai",
        "rate_limit": {"concurrency": 1},
        "limits": {"max_output_tokens": 100},
    }
    routed = {
        "display_name": "one-slot-then-claude",
        "routing": {"targets": [{"model": "gpt-one-slot"}, {"model": CLAUDE}]},
    }
    fenced = {
        "display_name": "fenced",
        "provider": "openai",
        "model_name": "gpt-4o",
        "provider_key_id": "pk-openai",
        "allowed_cidrs": ["10.0.0.0/8"],
    }
    narrow = {"key_hash": sha256(NARROW), "allowed_models": [GPT]}
    disabled = {"key_hash": sha256(DISABLED), "allowed_models": ["*"], "disabled": True}
    expired = {
        "key_hash": sha256(EXPIRED),
        "allowed_models": ["*"],
        "expires_at": "2020-01-01T00:00:00Z",
    }
    return [
        Record("api_keys", "k-disabled", disabled, 1),
        Record("api_keys", "k-expired", expired, 1),
        Record("models", "m-one", gpt_one, 1),
        Record("models", "m-routed", routed, 1),
        Record("models", "m-fenced", fenced, 1),
        Record("api_keys", "k-narrow", narrow, 1),
    ]


async def make(tmp_path: Path, **settings: Any) -> Rig:
    return await Rig(tmp_path, extra=extra_records(), settings=settings).__aenter__()


@pytest.fixture
async def edge(tmp_path: Path) -> Any:
    rig = await make(tmp_path, proxy={"request_body_limit_bytes": 4096})
    yield rig
    await rig.__aexit__()


@pytest.mark.parametrize(
    ("key", "body", "status", "error_type"),
    [
        # contract §6.4: the OpenAI envelope's types
        ("sk-nobody", chat(GPT), 401, "invalid_api_key"),
        (CALLER, chat("no-such-alias"), 404, "model_not_found"),
        (NARROW, chat(CLAUDE), 403, "permission_denied"),
        (CALLER, chat("fenced"), 403, "permission_denied"),
        (CALLER, {"model": GPT}, 400, "invalid_request_error"),
        (CALLER, chat(GPT, text="x" * 5000), 413, "request_too_large"),
    ],
)
async def test_refusals_before_any_upstream_call(
    edge: Rig, key: str, body: dict[str, Any], status: int, error_type: str
) -> None:
    answer = await edge.post("/v1/chat/completions", body, key=key)
    assert answer.status == status, answer.body
    assert answer.json()["error"]["type"] == error_type
    assert edge.upstream.seen == []
    counters = edge.counters()
    assert (counters.slots, counters.reserved) == (0, 0)


async def test_a_refusal_on_the_messages_route_uses_the_anthropic_envelope(edge: Rig) -> None:
    answer = await edge.post("/v1/messages", messages(GPT), key="sk-nobody")
    assert answer.status == 401
    assert answer.json()["type"] == "error"
    assert answer.json()["error"]["type"] == "authentication_error"


async def test_invalid_json_is_a_400(edge: Rig) -> None:
    scope_body = b"{not json"
    answer = await raw_post(edge, "/v1/chat/completions", scope_body)
    assert answer[0] == 400


async def raw_post(rig: Rig, path: str, raw: bytes) -> tuple[int, bytes]:
    messages_out: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {CALLER}".encode())],
        "client": ("127.0.0.1", 1),
    }
    parts = [{"type": "http.request", "body": raw, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        messages_out.append(message)

    await rig.app(scope, receive, send)  # type: ignore[arg-type]
    status = messages_out[0]["status"]
    return status, b"".join(m.get("body", b"") for m in messages_out[1:])


async def test_no_snapshot_yet_is_a_503(edge: Rig) -> None:
    edge.rt.holder = SnapshotHolder()  # nothing published: the gateway is not ready
    answer = await edge.post("/v1/chat/completions", chat(GPT))
    assert answer.status == 503
    assert (await edge.get("/readyz")).status == 503
    assert (await edge.get("/livez")).status == 200


async def test_routes_methods_models_and_request_ids(edge: Rig) -> None:
    wrong = await edge.get("/v1/chat/completions")
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"
    unknown = await edge.post("/v1/nothing", {})
    assert unknown.status == 404
    listed = await edge.get("/v1/models", key=NARROW)
    assert [m["id"] for m in listed.json()["data"]] == [GPT]
    model = await edge.get(f"/v1/models/{GPT}", key=NARROW)
    assert model.json()["id"] == GPT and model.json()["owned_by"] == "openai"
    assert (await edge.get(f"/v1/models/{CLAUDE}", key=NARROW)).status == 404
    assert (await edge.get(f"/v1/models/{GPT_FIRST}")).status == 404  # routing: not listed
    echoed = await edge.post("/v1/chat/completions", chat(GPT), headers={"x-request-id": "r-1"})
    assert echoed.headers["x-aisix-request-id"] == "r-1"
    assert echoed.headers["x-aisix-call-id"] == "r-1"
    bad_id = await edge.post("/v1/chat/completions", chat(GPT), headers={"x-request-id": "a b"})
    assert bad_id.headers["x-aisix-request-id"] != "a b"  # not a valid id: a fresh one
    assert (
        edge.upstream.seen[-1].headers["x-aisix-request-id"] == bad_id.headers["x-aisix-request-id"]
    )


async def test_a_target_refused_by_its_own_limits_is_skipped(edge: Rig) -> None:
    edge.upstream.script(OPENAI_HOST, json_reply(openai_chat(), delay=0.5))
    first = asyncio.create_task(edge.post("/v1/chat/completions", chat("one-slot-then-claude")))  # type: ignore[arg-type,var-annotated]
    await edge.upstream.wait_requests(1)
    # the one slot of gpt-one-slot is taken: the routing alias goes to claude at once
    second = await edge.post("/v1/chat/completions", chat("one-slot-then-claude"))
    assert second.status == 200
    assert second.headers["x-aisix-served-by"] == CLAUDE
    assert edge.upstream.hosts() == [OPENAI_HOST, ANTHROPIC_HOST]
    # the direct alias has nowhere else to go: the target's limit answers
    alone = await edge.post("/v1/chat/completions", chat("gpt-one-slot"))
    assert alone.status == 429, alone.body
    assert (await first).status == 200
    counters = edge.counters()
    assert (counters.slots, counters.reserved) == (0, 0)


async def test_max_output_tokens_caps_a_translated_request_only(edge: Rig) -> None:
    big = messages("gpt-one-slot", max_tokens=5000)
    assert (await edge.post("/v1/messages", big)).status == 200
    assert edge.upstream.bodies()[-1]["max_tokens"] == 100
    relayed = chat("gpt-one-slot", max_tokens=5000)
    assert (await edge.post("/v1/chat/completions", relayed)).status == 200
    assert edge.upstream.bodies()[-1]["max_tokens"] == 5000


async def test_an_endpoint_the_target_cannot_serve_is_501(edge: Rig) -> None:
    answer = await edge.post("/v1/embeddings", {"model": CLAUDE, "input": "hi"})
    assert answer.status == 501, answer.body
    assert edge.upstream.seen == []


async def test_embeddings_are_relayed_to_an_openai_target(edge: Rig) -> None:
    vectors = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    edge.upstream.script(OPENAI_HOST, json_reply(vectors))
    body = {"model": GPT, "input": "hi", "encoding_format": "float"}
    answer = await edge.post("/v1/embeddings", body)
    assert answer.status == 200, answer.body
    assert answer.json()["data"][0]["embedding"] == [0.5, 0.25]
    assert answer.json()["model"] == GPT
    assert edge.upstream.seen[-1].url == f"http://{OPENAI_HOST}/v1/embeddings"


async def test_count_tokens_is_local_for_openai_and_relayed_for_anthropic(edge: Rig) -> None:
    body = {"model": GPT, "messages": [{"role": "user", "content": "count these words"}]}
    local = await edge.post("/v1/messages/count_tokens", body)
    assert local.status == 200 and local.json()["input_tokens"] > 0
    assert edge.upstream.seen == []  # estimated, no upstream call
    edge.upstream.script(ANTHROPIC_HOST, json_reply({"input_tokens": 42}))
    relayed = await edge.post("/v1/messages/count_tokens", {**body, "model": CLAUDE})
    assert relayed.json() == {"input_tokens": 42}
    assert edge.upstream.seen[-1].url == f"http://{ANTHROPIC_HOST}/v1/messages/count_tokens"
    assert edge.counters().spent == 0  # counting is free


async def test_the_egress_proxy_is_chosen_per_attempt(tmp_path: Path) -> None:
    rig = await make(tmp_path, upstream={"proxy": {"url": "http://proxy.test:3128"}})
    try:
        assert (await rig.post("/v1/chat/completions", chat(GPT))).status == 200
        assert rig.upstream.seen[-1].proxy == "http://proxy.test:3128"
    finally:
        await rig.__aexit__()


async def test_a_silent_stream_gets_keepalive_pings(tmp_path: Path) -> None:
    rig = await make(tmp_path, downstream={"sse_keepalive_interval_secs": 1})
    try:
        rig.upstream.script(OPENAI_HOST, sse_reply(openai_stream(["a", "b"]), chunk_delay=0.6))
        answer = await rig.post("/v1/chat/completions", chat(GPT, stream=True))
        assert answer.status == 200
        assert b": ping\n\n" in answer.chunks
        assert answer.body.endswith(b"data: [DONE]\n\n")
    finally:
        await rig.__aexit__()


async def test_a_stream_without_any_event_is_a_502(edge: Rig) -> None:
    edge.upstream.script(OPENAI_HOST, *[sse_reply([b": just a comment\n\n"])] * 3)
    answer = await edge.post("/v1/chat/completions", chat(GPT, stream=True))
    assert answer.status == 502, answer.body
    counters = edge.counters()
    assert (counters.slots, counters.reserved) == (0, 0)


async def test_completions_are_relayed_to_openai_and_501_on_anthropic(edge: Rig) -> None:
    legacy = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "text": "hello", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
    edge.upstream.script(OPENAI_HOST, json_reply(legacy))
    answer = await edge.post("/v1/completions", {"model": GPT, "prompt": "say hello"})
    assert answer.status == 200, answer.body
    assert answer.json()["model"] == GPT and answer.json()["choices"][0]["text"] == "hello"
    assert edge.upstream.seen[-1].url == f"http://{OPENAI_HOST}/v1/completions"
    assert edge.event().usage.total_tokens == 3  # type: ignore[union-attr]
    refused = await edge.post("/v1/completions", {"model": CLAUDE, "prompt": "say hello"})
    assert refused.status == 501
    assert len(edge.upstream.seen) == 1


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"authorization": f"Bearer {DISABLED}"}, "api_key_disabled"),
        ({"authorization": f"Bearer {EXPIRED}"}, "api_key_expired"),
        ({"authorization": f"Basic {CALLER}"}, None),
        ({"authorization": "Bearer "}, None),
    ],
)
async def test_keys_that_may_not_call(edge: Rig, headers: dict[str, str], code: str | None) -> None:
    answer = await edge.post("/v1/chat/completions", chat(GPT), headers=headers)
    assert answer.status == 401, answer.body
    assert answer.json()["error"].get("code") == code
    assert edge.upstream.seen == []


async def test_an_anthropic_client_authenticates_with_x_api_key(edge: Rig) -> None:
    answer = await edge.client.request(
        "POST", "/v1/messages", messages(CLAUDE), key="", headers={"x-api-key": CALLER}
    )
    assert answer.status == 200, answer.body
    assert edge.upstream.seen[-1].headers.get("x-api-key") != CALLER  # the provider's own


@pytest.mark.parametrize(
    ("path", "alias", "host"),
    [("/v1/chat/completions", GPT, OPENAI_HOST), ("/v1/messages", CLAUDE, ANTHROPIC_HOST)],
)
async def test_a_whole_stream_in_one_read_is_relayed_and_released(
    edge: Rig, path: str, alias: str, host: str
) -> None:
    from fakes.pipeline_rig import anthropic_stream

    whole = openai_stream(["hel", "lo"]) if host == OPENAI_HOST else anthropic_stream(["hi"])
    edge.upstream.script(host, sse_reply([b"".join(whole)]))
    body = chat(alias, stream=True) if host == OPENAI_HOST else messages(alias, stream=True)
    answer = await edge.post(path, body)
    assert answer.status == 200 and answer.complete
    end = b"data: [DONE]\n\n" if host == OPENAI_HOST else b"event: message_stop"
    assert end in answer.body
    assert edge.mock.responses[-1].released  # the connection may go back to the pool
    assert edge.event().usage is not None
