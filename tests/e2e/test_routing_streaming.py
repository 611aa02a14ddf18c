"""Routing aliases end to end, streams and observability (contract §6.5, §6.8, §8.3, §12):
failover before the first byte only, `stream_timeout`, mid-stream cuts, client disconnects,
`x-aisix-served-by`, access log and metrics, and the official `openai` SDK as the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from e2e_helpers import Gateway, HttpResponse, wait_for
from routing_lab import CALLER, Lab, count, free_port, lab_fixture, served_by, start_gateway

from fakes.openai_upstream import FakeOpenAIUpstream, Reply

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory, free_port)
    yield gateway
    gateway.stop()


@pytest.fixture
def lab(gw: Gateway) -> Iterator[Lab]:
    yield from lab_fixture(gw)


def events(response: HttpResponse) -> list[Any]:
    """The stream's data payloads, JSON-decoded except the `[DONE]` marker."""
    return [d if d == "[DONE]" else orjson.loads(d) for d in response.sse_data()]


def assert_clean_stream(response: HttpResponse, alias: str) -> None:
    assert response.status == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    data = events(response)
    assert data[-1] == "[DONE]" and data.count("[DONE]") == 1
    chunks = data[:-1]
    assert chunks and all(c["model"] == alias for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: hi"


def assert_error_ended(response: HttpResponse, err_type: str) -> dict[str, Any]:
    """A stream that started, then ended with one error event and no `[DONE]`."""
    assert response.status == 200, response.text
    data = events(response)
    assert "[DONE]" not in data
    assert len(data) >= 2, data  # at least one relayed chunk before the error
    *chunks, last = data
    assert all("error" not in c for c in chunks)
    assert all(ch.get("finish_reason") is None for c in chunks for ch in c["choices"])
    assert set(last) == {"error"} and last["error"]["type"] == err_type, last
    assert isinstance(last["error"]["message"], str) and last["error"]["message"]
    return dict(last["error"])


# --- failover before the first byte, none after -----------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Reply.error(500),
        Reply(drop_connection=True),
        Reply(delay_s=3.0),  # no response head within stream_timeout
        Reply(first_chunk_delay_s=3.0),  # head at once, first chunk too late
    ],
    ids=["500", "dropped", "slow-head", "slow-first-chunk"],
)
def test_stream_fails_over_before_the_first_byte(lab: Lab, fault: Reply) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.default = fault
    names = [lab.target("a", a, stream_timeout=300), lab.target("b", b)]
    alias = lab.alias("s", names)

    start = time.monotonic()
    response = lab.call(alias, stream=True)

    assert_clean_stream(response, alias)
    assert served_by(response) == names[1]
    assert (count(a), count(b)) == (1, 1)
    assert time.monotonic() - start < 2.5  # the slow upstream would take 3 s
    assert a.model_requests()[0].json["stream"] is True


def test_gap_beyond_stream_timeout_mid_stream_ends_with_error_event(lab: Lab) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.default = Reply(chunk_delay_s=3.0)
    names = [lab.target("a", a, stream_timeout=300), lab.target("b", b)]
    alias = lab.alias("gap", names)

    start = time.monotonic()
    response = lab.call(alias, stream=True)

    error = assert_error_ended(response, "timeout")
    assert error["message"] == "upstream request timed out after 300ms"
    assert time.monotonic() - start < 2.5  # cut by the gateway, not by the upstream's pace
    assert served_by(response) == names[0]
    assert count(b) == 0  # no failover after the first byte
    state = lab.status(names[0])
    assert state["status"] == "cooldown" and state["status_reason"] == "request_timeout"


def test_stream_cut_after_the_first_byte_ends_with_error_event_and_no_failover(lab: Lab) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.default = Reply(cut_after_chunks=2)
    names = [lab.target("a", a), lab.target("b", b)]
    alias = lab.alias("cut", names, retries=2)
    rid = f"{lab.prefix}cut"

    response = lab.call(alias, stream=True, request_id=rid)

    assert_error_ended(response, "upstream_error")
    assert served_by(response) == names[0]
    assert (count(a), count(b)) == (1, 0)  # neither retried nor failed over
    state = lab.status(names[0])
    assert state["status"] == "cooldown" and state["status_reason"] == "transport_error"
    line = lab.log_line(rid)
    assert line["attempts"] == 1 and line["is_fallback"] is False
    assert line["error_type"] == "upstream_error"


# --- client disconnect ------------------------------------------------------------------------


def _hang_up_raw(gw: Gateway, body: dict[str, Any], request_id: str) -> float:
    headers = {"Authorization": f"Bearer {CALLER}", "x-request-id": request_id}
    gw.stream_and_hang_up(orjson.dumps(body), headers)
    return time.monotonic()


def _hang_up_aiohttp(gw: Gateway, body: dict[str, Any], request_id: str) -> float:
    async def run() -> float:
        headers = {"Authorization": f"Bearer {CALLER}", "x-request-id": request_id}
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                gw.proxy_url + "/v1/chat/completions", json=body, headers=headers
            )
            assert response.status == 200
            assert (await response.content.readline()).startswith(b"data: ")
            response.close()  # drops the connection mid-stream
            return time.monotonic()

    return asyncio.run(run())


@pytest.mark.parametrize("hang_up", [_hang_up_raw, _hang_up_aiohttp], ids=["socket", "aiohttp"])
def test_client_disconnect_mid_stream_releases_the_upstream(lab: Lab, hang_up: Any) -> None:
    a = lab.upstream()
    a.default = Reply(chunks=40, chunk_delay_s=0.2)  # 8 s if nobody hangs up
    name = lab.target("a", a)
    alias = lab.alias("dc", [name])
    endpoint = {"endpoint": "/v1/chat/completions"}
    cancelled_before = lab.metric("aisix_proxy_client_cancelled_requests_total", **endpoint)
    rid = f"{lab.prefix}dc"

    closed_at = hang_up(
        lab.gw,
        {"model": alias, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        rid,
    )

    wait_for(lambda: a.disconnects, 2.0, "the upstream connection to be closed")
    assert a.disconnects[0] - closed_at < 1.0
    wait_for(lambda: lab.status(name)["in_flight"] == 0, 2.0, "in_flight back to 0")
    lab.gw.assert_alive()
    assert lab.call(alias).status == 200
    # the request's one event feeds both the access log and the metrics
    line = lab.log_line(rid)
    cancelled = lab.metric("aisix_proxy_client_cancelled_requests_total", **endpoint)
    assert line["status"] == 499 or line.get("error_type") == "client_gone", line
    assert cancelled == cancelled_before + 1, (cancelled_before, cancelled)


# --- observability ----------------------------------------------------------------------------


def test_served_by_access_log_and_metrics_record_attempts_and_fallbacks(lab: Lab) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.default = Reply.error(500)
    names = [lab.target("a", a), lab.target("b", b)]
    alias = lab.alias("obs", names)
    dead = lab.alias("dead", [names[0]], on_all_filtered="original_order")
    rid = f"{lab.prefix}obs"

    response = lab.call(alias, request_id=rid)
    assert response.status == 200 and served_by(response) == names[1]
    direct = lab.call(names[1])
    assert direct.status == 200 and served_by(direct) is None  # only on routing aliases

    line = lab.log_line(rid)
    assert line["model"] == alias and line["served_by"] == names[1]
    assert line["status"] == 200 and line["attempts"] == 2 and line["is_fallback"] is True
    assert [(x["model"], x["status"]) for x in line["attempt_log"]] == [
        (names[0], 500),
        (names[1], 200),
    ]
    assert all(x["latency_ms"] >= 0 for x in line["attempt_log"])

    def metrics_settled() -> bool:
        return lab.metric("aisix_routing_successful_fallbacks_total", model=alias) == 1

    wait_for(metrics_settled, 3.0, "the fallback metric")
    llm = "aisix_llm_requests_total"
    assert lab.metric(llm, model=names[1], status="200", is_fallback="true") == 1
    assert lab.metric(llm, model=names[0], status="500", is_fallback="false") == 1
    assert lab.metric(llm, model=names[1], status="200", is_fallback="false") == 1  # direct

    error_rid = f"{lab.prefix}dead"
    assert lab.call(dead, request_id=error_rid).status == 502
    line = lab.log_line(error_rid)
    assert line["status"] == 502 and line["error_code"] == "upstream_server_error"
    assert line["is_fallback"] is False and line["attempts"] == 1


# --- the official openai SDK ------------------------------------------------------------------


def _failing_pair(lab: Lab, first: FakeOpenAIUpstream) -> tuple[str, list[str]]:
    second = lab.upstream()
    names = [lab.target("a", first), lab.target("b", second)]
    return lab.alias("sdk", names), names


def test_openai_sdk_through_a_failover(lab: Lab) -> None:
    a = lab.upstream()
    a.default = Reply.error(503)
    alias, names = _failing_pair(lab, a)
    client = lab.gw.openai_client(api_key=CALLER)

    raw = client.chat.completions.with_raw_response.create(
        model=alias, messages=[{"role": "user", "content": "hi"}]
    )
    completion = raw.parse()
    assert raw.headers["x-aisix-served-by"] == names[1]
    assert completion.model == alias
    assert completion.choices[0].message.content == "echo: hi"
    assert completion.usage is not None and completion.usage.total_tokens > 0

    a.default = Reply(drop_connection=True)
    stream = client.chat.completions.create(
        model=alias,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        assert chunk.model == alias
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == "echo: hi"
    assert usage is not None and usage.completion_tokens > 0
    assert count(a) == 1  # a is cooling after the first call; the stream went to b
    assert len(lab.fakes[1].model_requests()) == 2
