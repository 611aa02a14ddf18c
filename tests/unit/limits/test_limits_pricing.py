"""Estimates (§9.3) and costs (§10.1, §10.2)."""

from __future__ import annotations

import pytest

from aisix.events import Usage
from aisix.pricing import Estimate, cost_usd, estimate_request, worst_case_usd
from aisix.resources import Pricing


def test_prompt_estimate_is_utf8_bytes_over_four_rounded_up() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "abcd"},
            {"role": "user", "content": [{"type": "text", "text": "é"}, {"type": "image_url"}]},
        ],
        "max_tokens": 7,
    }
    assert estimate_request(body, 1024, False) == Estimate(2, 7)  # 4 + 2 bytes -> 2


def test_completion_cap_precedence() -> None:
    body = {"messages": [], "max_tokens": 7, "max_completion_tokens": 9}
    assert estimate_request(body, 1024, False).completion_cap == 9
    assert estimate_request({"messages": []}, 1024, False).completion_cap == 1024


def test_anthropic_system_tools_and_token_arrays() -> None:
    body = {
        "system": [{"type": "text", "text": "12345678"}],
        "messages": [
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "name": "f", "input": {"a": 1}}],
            },
        ],
        "max_tokens": 5,
    }
    # 8 bytes + "f" + '{"a":1}' (7 bytes) = 16 bytes -> 4
    assert estimate_request(body, 1024, False) == Estimate(4, 5)
    assert estimate_request({"prompt": [1, 2, 3]}, 16, False) == Estimate(3, 16)


def test_embeddings_have_no_completion() -> None:
    assert estimate_request({"input": ["abcd", "ef"]}, 1024, True) == Estimate(2, 0)
    assert estimate_request({"input": [[1, 2], [3]]}, 1024, True) == Estimate(3, 0)


def test_cost_prices_cached_tokens() -> None:
    pricing = Pricing(input_per_million=2.5, output_per_million=10, cached_input_per_million=1.25)
    usage = Usage(prompt_tokens=1000, completion_tokens=200, cached_tokens=400, total_tokens=1200)
    assert cost_usd(pricing, usage) == pytest.approx((600 * 2.5 + 400 * 1.25 + 200 * 10) / 1e6)
    no_cached_price = Pricing(input_per_million=2.5, output_per_million=10)
    assert cost_usd(no_cached_price, usage) == pytest.approx((1000 * 2.5 + 200 * 10) / 1e6)
    assert cost_usd(None, usage) == 0.0


def test_worst_case_is_whole_cap_at_output_price() -> None:
    pricing = Pricing(input_per_million=2, output_per_million=8)
    assert worst_case_usd(pricing, Estimate(100, 50)) == pytest.approx((200 + 400) / 1e6)
    assert worst_case_usd(None, Estimate(100, 50)) == 0.0


def test_plain_chat_fast_path_counts_like_the_general_walk() -> None:
    from aisix.pricing import _TextCounter

    for content in ("Hello there", "héllo wörld ✓", "", "x" * 4097):
        body = {"model": "m", "messages": [{"role": "user", "content": content}] * 3}
        counter = _TextCounter()
        counter.add(body["messages"], top=True)
        assert estimate_request(body, 7, False).prompt_tokens == -(-counter.bytes // 4)
    # a message with more than role and content takes the general walk (its name counts)
    named = {"messages": [{"role": "user", "content": "abcd", "name": "abcd"}]}
    assert estimate_request(named, 7, False).prompt_tokens == 2
