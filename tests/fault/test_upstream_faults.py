"""Upstream faults through a real gateway (issue 12 item 12): a connection reset mid-body, a
status line that is not HTTP, a 200 with truncated JSON, a stream that stalls after its head and
an upstream that never answers. Each is answered in the OpenAI envelope within the configured
deadline, and the caller's only concurrency slot comes back: the next call is admitted.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from e2e_helpers import ALIAS, Gateway

from fakes.fault_upstream import FaultUpstream

ONE_SLOT = "sk-fault-one-slot"
DEADLINE_S = 1.5  # the upstream deadline configured below (timeout_ms, stream_timeout_ms)
CHAT = {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]}


def one_slot_gateway(gateway: Any, upstream: FaultUpstream) -> Gateway:
    ms = int(DEADLINE_S * 1000)
    gw: Gateway = gateway({"upstream": {"timeout_ms": ms, "stream_timeout_ms": ms, "retries": 0}})
    pk = gw.create_provider_key(upstream.url)
    gw.create_model(ALIAS, pk, cooldown={"enabled": False})
    gw.create_api_key(ONE_SLOT, [ALIAS], rate_limit={"concurrency": 1})
    gw.wait_for_key(ONE_SLOT)
    return gw


def assert_openai_error(answer: Any, statuses: set[int]) -> None:
    assert answer.status in statuses, (answer.status, answer.text)
    error = answer.json["error"]
    assert isinstance(error["message"], str) and error["message"], answer.text
    assert isinstance(error["type"], str) and error["type"], answer.text


def assert_slot_released(gw: Gateway, upstream: FaultUpstream) -> None:
    upstream.fault = "ok"
    ok = gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=ONE_SLOT)
    assert ok.status == 200, ok.text
    assert ok.json["choices"][0]["message"]["content"] == "fine"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("fault", "stream", "statuses"),
    [
        ("reset_mid_body", False, {502}),
        ("garbage_status", False, {502}),
        ("truncated_json", False, {502}),
        ("stall_after_head", True, {502, 504}),
        ("never_answer", False, {504}),
        ("never_answer", True, {504}),
    ],
)
def test_an_upstream_fault_is_an_error_envelope_and_releases_the_slot(
    gateway: Any, fault_upstream: FaultUpstream, fault: str, stream: bool, statuses: set[int]
) -> None:
    gw = one_slot_gateway(gateway, fault_upstream)
    assert_slot_released(gw, fault_upstream)  # a good call first: the route works
    fault_upstream.fault = fault
    started = time.monotonic()
    answer = gw.proxy("POST", "/v1/chat/completions", {**CHAT, "stream": stream}, api_key=ONE_SLOT)
    elapsed = time.monotonic() - started
    assert_openai_error(answer, statuses)
    assert elapsed < DEADLINE_S + 5.0, f"{fault} took {elapsed:.1f}s"
    assert_slot_released(gw, fault_upstream)
    gw.assert_alive()
