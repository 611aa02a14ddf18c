"""Rate limits, budgets and usage end to end, through the real gateway over HTTP (contract §2.4,
§5.5-5.7, §6.3, §6.5, §9, §10, §12.1), memory backend. The Redis backend (two gateways sharing
one redis-server, workers, Redis outages) is in `test_limits_redis_e2e.py`.

Numbers are kept small; the fake upstream reports fixed usage so token counts and costs are
exact: with `pricing` 1000/1000 USD per million tokens a token costs 0.001 USD, and a request
with `max_tokens: 20` and the prompt "hi" (2 bytes -> 1 token) reserves 21 tokens = 0.021 USD,
which is also what it costs when the upstream reports 1 + 20 tokens.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import orjson
import pytest
from e2e_helpers import ALIAS, Gateway, HttpResponse, wait_for

from fakes.openai_upstream import FakeOpenAIUpstream, Reply

pytestmark = pytest.mark.timeout(60)

#: what the fake upstream reports by default: exactly the reservation of a max_tokens=20 "hi"
USAGE_21 = {"prompt_tokens": 1, "completion_tokens": 20, "total_tokens": 21}
#: 0.001 USD per token, input and output
PRICING = {"input_per_million": 1000, "output_per_million": 1000}
COST_21 = 0.021


# --- helpers ---------------------------------------------------------------------------------


def metric(gw: Gateway, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    return gw.metric(name, **labels)


def revision(gw: Gateway) -> int:
    response = gw.status("/status/config")
    assert response.status == 200, response
    return int(response.json["snapshot"]["revision"])


def write(
    gw: Gateway, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201)
) -> HttpResponse:
    """An admin write that must succeed; returns once the proxy serves a snapshot with it."""
    before = revision(gw)
    response = gw.admin(method, path, body)
    assert response.status in expect, (method, path, response.status, response.text)
    wait_for(lambda: revision(gw) > before, 2.0, f"the snapshot to include {method} {path}")
    return response


def add_key(gw: Gateway, name: str, allowed: list[str] | None = None, **fields: Any) -> str:
    """Create caller key `sk-<name>` (allowed every alias by default); return its id."""
    key_id = gw.create_api_key(f"sk-{name}", allowed or ["*"], **fields)
    return key_id


def setup(gw: Gateway, fake: FakeOpenAIUpstream, **model_fields: Any) -> tuple[str, str]:
    """Provider key -> fake, model ALIAS (cooldown off, no retries); returns (pk id, model id)."""
    pk = gw.create_provider_key(fake.url)
    model_fields.setdefault("cooldown", {"enabled": False})
    model_fields.setdefault("retries", 0)
    model = gw.create_model(ALIAS, pk, **model_fields)
    return pk, model


def ready(gw: Gateway, *names: str, alias: str = ALIAS) -> None:
    for name in names:
        gw.wait_for_key(f"sk-{name}", alias)


def chat(
    gw: Gateway,
    name: str,
    *,
    alias: str = ALIAS,
    max_tokens: int | None = 20,
    stream: bool = False,
    timeout: float = 15.0,
) -> HttpResponse:
    body: dict[str, Any] = {"model": alias, "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
    return gw.proxy("POST", "/v1/chat/completions", body, api_key=f"sk-{name}", timeout=timeout)


def parallel(calls: list[Callable[[], HttpResponse]]) -> list[HttpResponse]:
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def statuses(responses: list[HttpResponse]) -> list[int]:
    return sorted(r.status for r in responses)


def error(response: HttpResponse) -> dict[str, Any]:
    body = response.json
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), response.text
    return dict(body["error"])


def clear_of_window_edge(window_s: int = 60, margin_s: float = 8.0) -> None:
    """Wait for the next window when fewer than `margin_s` seconds of this one are left, so a
    test's requests all fall into one fixed UTC window."""
    left = window_s - time.time() % window_s
    if left < margin_s:
        time.sleep(left + 0.05)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def day_bounds() -> tuple[datetime, datetime]:
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def assert_rate_refusal(response: HttpResponse, message: str, window_s: int = 60) -> None:
    assert response.status == 429, response.text
    err = error(response)
    assert err["type"] == "rate_limit_exceeded", err
    assert err["message"] == message, err
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= window_s, response.headers


def assert_budget_refusal(
    response: HttpResponse, scope: str, scope_ref: str, limit_usd: float, period: str = "day"
) -> dict[str, Any]:
    assert response.status == 429, response.text
    err = error(response)
    assert err["type"] == "billing_error", err
    assert err["code"] == "budget_exceeded", err
    assert err["message"] == f'budget exceeded for {scope} "{scope_ref}"', err
    assert err["scope"] == scope and err["scope_ref"] == scope_ref, err
    assert err["limit_usd"] == pytest.approx(limit_usd), err
    assert isinstance(err["spent_usd"], int | float) and 0 <= err["spent_usd"] <= limit_usd, err
    assert err["period"] == period, err
    if period == "day":
        end = day_bounds()[1]
        assert err["period_resets_at"] == rfc3339(end), err
        left = (end - datetime.now(UTC)).total_seconds()
        assert abs(int(response.headers["retry-after"]) - left) <= 5, response.headers
    return err


def key_usage(gw: Gateway, key_id: str, query: str = "") -> dict[str, Any]:
    response = gw.admin("GET", f"/apikeys/{key_id}/usage{query}")
    assert response.status == 200, response.text
    return dict(response.json)


def wait_usage(
    gw: Gateway, key_id: str, requests: int, spent: float | None = None
) -> dict[str, Any]:
    """The key's usage once the ledger shows `requests` (and the budget `spent` USD)."""

    def settled() -> dict[str, Any] | None:
        usage = key_usage(gw, key_id)
        if usage["requests"] != requests:
            return None
        budget = usage.get("budget")
        if spent is not None and (
            budget is None
            or budget["spent_usd"] != pytest.approx(spent)
            or budget["reserved_usd"] != 0
        ):
            return None
        return usage

    found: dict[str, Any] = wait_for(settled, 5.0, f"usage of {key_id} to show {requests} requests")
    return found


# --- request limits --------------------------------------------------------------------------


def test_key_rpm_admits_exactly_k_of_n_parallel_requests(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway()
    setup(gw, fake_openai, rate_limit={"rpm": 50})
    add_key(gw, "limited", rate_limit={"rpm": 4})
    add_key(gw, "free")
    ready(gw, "limited", "free")
    fake_openai.default = Reply(delay_s=0.2, usage=USAGE_21)
    clear_of_window_edge()

    responses = parallel([lambda: chat(gw, "limited")] * 10)

    assert statuses(responses) == [200] * 4 + [429] * 6, [r.text for r in responses]
    for refused in (r for r in responses if r.status == 429):
        assert_rate_refusal(refused, "request limit exceeded (requests)")
        assert "policy" not in error(refused)
    oks = [r for r in responses if r.status == 200]
    # the strictest bucket is the key's (4 per minute), not the model's (50)
    assert {r.headers["x-ratelimit-limit-requests"] for r in oks} == {"4"}
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in oks)
    assert remaining == [0, 1, 2, 3], remaining
    for ok in oks:
        reset = ok.headers["x-ratelimit-reset-requests"]
        assert re.fullmatch(r"\d+s", reset) and 1 <= int(reset[:-1]) <= 60, reset
    assert len(fake_openai.model_requests()) == 4

    # the official SDK sees the refusal as openai.RateLimitError
    client = gw.openai_client("sk-limited")
    with pytest.raises(openai.RateLimitError) as refused_sdk:
        client.chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": "hi"}], max_tokens=20
        )
    assert refused_sdk.value.status_code == 429
    assert int(refused_sdk.value.response.headers["retry-after"]) >= 1
    body = refused_sdk.value.body
    assert isinstance(body, dict) and body["type"] == "rate_limit_exceeded", body
    assert body["message"] == "request limit exceeded (requests)"

    # another key is not affected; the model bucket counted only the 4 admitted requests
    # (refusals by the key layer took nothing from it), so the strictest bucket now is the
    # model's: 50 - 4 - 1
    other = chat(gw, "free")
    assert other.status == 200, other.text
    assert other.headers["x-ratelimit-limit-requests"] == "50"
    assert other.headers["x-ratelimit-remaining-requests"] == "45"


def test_model_inline_rpm_refuses_without_policy_suffix(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway()
    setup(gw, fake_openai, rate_limit={"rph": 2})
    add_key(gw, "a")
    add_key(gw, "b")
    ready(gw, "a", "b")
    assert chat(gw, "a").status == 200
    second = chat(gw, "b")
    assert second.status == 200
    assert second.headers["x-ratelimit-limit-requests"] == "2"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    # the model's bucket is shared by every key
    for name in ("a", "b"):
        refused = chat(gw, name)
        assert_rate_refusal(refused, "request limit exceeded (requests)", window_s=3600)
        assert "policy" not in error(refused)
    assert metric(gw, "aisix_ratelimit_rejections_total", scope="requests", layer="model") == 2


def test_rate_limit_policy_crud_refusal_and_rollback(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway()
    setup(gw, fake_openai)
    key_id = add_key(gw, "app", rate_limit={"rpd": 10})
    ready(gw, "app")
    fake_openai.default = Reply(usage=USAGE_21)

    policy = {
        "name": "key-cap",
        "scope": "api_key",
        "scope_ref": key_id,
        "window": "day",
        "max_requests": 3,
    }
    created = write(gw, "POST", "/rate_limit_policies", policy)
    assert created.status == 201 and created.json["revision"] == 1
    pid = created.json["id"]
    assert created.json["value"] == policy
    got = gw.admin("GET", f"/rate_limit_policies/{pid}")
    assert got.status == 200 and got.json == created.json
    updated = write(gw, "PUT", f"/rate_limit_policies/{pid}", {**policy, "max_requests": 2})
    assert updated.status == 200 and updated.json["revision"] == 2
    assert updated.json["value"]["max_requests"] == 2
    listed = gw.admin("GET", "/rate_limit_policies")
    assert listed.status == 200 and listed.json["total"] == 1
    assert [e["id"] for e in listed.json["list"]] == [pid]

    # validation and references
    for bad in (
        {**policy, "name": "x1", "scope_ref": "no-such-key"},
        {**policy, "name": "x2", "scope": "model", "scope_ref": "no-such-model"},
        {k: v for k, v in {**policy, "name": "x3"}.items() if k != "max_requests"},
        {**policy, "name": "x4", "window": "week"},
        {**policy, "name": "x5", "max_requests": 0},
        {**policy, "name": "x6", "burst": 3},
    ):
        response = gw.admin("POST", "/rate_limit_policies", bad)
        assert response.status == 400, (bad, response.text)
        assert "error_msg" in response.json
    assert gw.admin("POST", "/rate_limit_policies", policy).status == 409  # name in use
    referenced = gw.admin("DELETE", f"/apikeys/{key_id}")
    assert referenced.status == 409, referenced.text
    assert "rate_limit_policies" in referenced.json["error_msg"], referenced.text

    # enforcement: the policy (2/day) is stricter than the key (10/day)
    first, second = chat(gw, "app"), chat(gw, "app")
    assert (first.status, second.status) == (200, 200), (first.text, second.text)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert [
        first.headers["x-ratelimit-remaining-requests"],
        second.headers["x-ratelimit-remaining-requests"],
    ] == ["1", "0"]
    for _ in range(3):
        refused = chat(gw, "app")
        assert_rate_refusal(
            refused, "request limit exceeded (requests) (policy 'key-cap')", window_s=86400
        )
        assert error(refused)["policy"] == {"id": pid, "name": "key-cap"}
    assert metric(gw, "aisix_ratelimit_rejections_total", scope="requests", layer="policy") == 3

    # the refused requests gave back what the key layer had counted: after the policy is gone
    # the key's bucket holds the 2 admitted requests only (10 - 2 - this one = 7, not 4)
    deleted = write(gw, "DELETE", f"/rate_limit_policies/{pid}")
    assert deleted.json == {"deleted": True, "id": pid}
    assert gw.admin("GET", f"/rate_limit_policies/{pid}").status == 404
    after = chat(gw, "app")
    assert after.status == 200, after.text
    assert after.headers["x-ratelimit-limit-requests"] == "10"
    assert after.headers["x-ratelimit-remaining-requests"] == "7"
    assert len(fake_openai.model_requests()) == 3


def test_rate_limit_policy_scopes_team_member_team_member_and_model(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway()
    pk, _ = setup(gw, fake_openai)
    other_model = gw.create_model("m-other", pk, cooldown={"enabled": False}, retries=0)
    add_key(gw, "t1", team_id="team-a", user_id="u1")
    add_key(gw, "t2", team_id="team-a", user_id="u2")
    add_key(gw, "tb", team_id="team-b", user_id="u1")
    add_key(gw, "m1", team_id="team-x", user_id="u9")
    add_key(gw, "m2", user_id="u9")
    add_key(gw, "c1", team_id="team-c", user_id="c1")
    add_key(gw, "c2", team_id="team-c", user_id="c2")
    add_key(gw, "c3", team_id="team-c")
    ready(gw, "t1", "t2", "tb", "m1", "m2", "c1", "c2", "c3")
    base = {"window": "hour"}

    def policy(name: str, scope: str, ref: str, limit: int) -> str:
        value = {**base, "name": name, "scope": scope, "scope_ref": ref, "max_requests": limit}
        return str(write(gw, "POST", "/rate_limit_policies", value).json["id"])

    def refused_by(response: HttpResponse, pid: str, name: str) -> None:
        assert_rate_refusal(
            response, f"request limit exceeded (requests) (policy '{name}')", window_s=3600
        )
        assert error(response)["policy"] == {"id": pid, "name": name}

    # team: one bucket for every key of the team
    pid = policy("team-cap", "team", "team-a", 2)
    assert [chat(gw, "t1").status, chat(gw, "t2").status] == [200, 200]
    refused_by(chat(gw, "t1"), pid, "team-cap")
    refused_by(chat(gw, "t2"), pid, "team-cap")
    assert chat(gw, "tb").status == 200  # another team
    write(gw, "DELETE", f"/rate_limit_policies/{pid}")

    # member: one bucket per user_id, whatever the team
    pid = policy("member-cap", "member", "u9", 2)
    assert [chat(gw, "m1").status, chat(gw, "m2").status] == [200, 200]
    refused_by(chat(gw, "m2"), pid, "member-cap")
    assert chat(gw, "t1").status == 200  # user u1
    write(gw, "DELETE", f"/rate_limit_policies/{pid}")

    # team_member: one bucket per user_id among the team's keys; keys without user_id exempt
    pid = policy("tm-cap", "team_member", "team-c", 1)
    assert chat(gw, "c1").status == 200
    refused_by(chat(gw, "c1"), pid, "tm-cap")
    assert chat(gw, "c2").status == 200
    refused_by(chat(gw, "c2"), pid, "tm-cap")
    assert [chat(gw, "c3").status, chat(gw, "c3").status] == [200, 200]
    write(gw, "DELETE", f"/rate_limit_policies/{pid}")

    # model: the model's bucket, for every key
    pid = policy("model-cap", "model", other_model, 1)
    assert chat(gw, "t1", alias="m-other").status == 200
    refused_by(chat(gw, "t2", alias="m-other"), pid, "model-cap")
    assert chat(gw, "t2").status == 200  # the other alias is not limited


# --- token limits ----------------------------------------------------------------------------


def test_token_limit_reserves_the_estimate_and_settles_to_actual_usage(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway()
    setup(gw, fake_openai)
    for name in ("tok", "par", "big", "est"):
        add_key(gw, name, rate_limit={"tpm": 100})
    ready(gw, "tok", "par", "big", "est")
    usage_10 = {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}
    fake_openai.default = Reply(usage=usage_10)
    clear_of_window_edge()

    # estimate = ceil(2 bytes / 4) + max_tokens 40 = 41; settled = the upstream's 10
    first = chat(gw, "tok", max_tokens=40)
    assert first.status == 200, first.text
    assert first.headers["x-ratelimit-limit-tokens"] == "100"
    assert first.headers["x-ratelimit-remaining-tokens"] == "59"
    assert re.fullmatch(r"\d+s", first.headers["x-ratelimit-reset-tokens"])
    assert "x-ratelimit-limit-requests" not in first.headers  # no request-count limit applies
    second = chat(gw, "tok", max_tokens=40)
    assert second.status == 200, second.text
    # the first request now counts 10 tokens, not its 41-token reservation
    assert second.headers["x-ratelimit-remaining-tokens"] == "49"

    # in flight together, reservations add up: 41 + 41 fit in 100, a third does not (these
    # use all 41 tokens, so the outcome does not depend on how the requests interleave)
    usage_41 = {"prompt_tokens": 1, "completion_tokens": 40, "total_tokens": 41}
    fake_openai.default = Reply(delay_s=0.5, usage=usage_41)
    responses = parallel([lambda: chat(gw, "par", max_tokens=40)] * 3)
    assert statuses(responses) == [200, 200, 429], [r.text for r in responses]
    fake_openai.default = Reply(usage=usage_10)
    refused = next(r for r in responses if r.status == 429)
    assert_rate_refusal(refused, "token limit exceeded (tokens)")
    # the bucket holds 82: a request estimated at 1 + 17 = 18 still fits (and settles to 10);
    # then it holds 92 and one estimated at 1 + 9 = 10 does not
    assert chat(gw, "par", max_tokens=17).status == 200
    assert_rate_refusal(chat(gw, "par", max_tokens=9), "token limit exceeded (tokens)")

    # a request larger than the whole limit runs only in an otherwise unused window
    huge = chat(gw, "big", max_tokens=500)
    assert huge.status == 200, huge.text
    assert huge.headers["x-ratelimit-remaining-tokens"] == "0"
    again = chat(gw, "big", max_tokens=500)  # 10 settled + 100 reserved > 100
    assert_rate_refusal(again, "token limit exceeded (tokens)")
    assert chat(gw, "big", max_tokens=40).status == 200  # 10 + 41 <= 100
    assert metric(gw, "aisix_ratelimit_rejections_total", scope="tokens", layer="api_key") == 3

    # a failed request gives its reservation back and adds nothing; without upstream usage the
    # gateway counts its own estimate: prompt 1 + "echo: hi" (8 bytes -> 2) = 3 tokens
    fake_openai.script(Reply.error(500), Reply(omit_usage=True))
    assert chat(gw, "est", max_tokens=40).status == 502
    estimated = chat(gw, "est", max_tokens=40)
    assert estimated.status == 200, estimated.text
    assert estimated.headers["x-ratelimit-remaining-tokens"] == "59"
    after = chat(gw, "est", max_tokens=40)
    assert after.headers["x-ratelimit-remaining-tokens"] == str(59 - 3)


# --- concurrency -----------------------------------------------------------------------------


def _hang_up_mid_stream(gw: Gateway, name: str) -> None:
    """Start a stream, read its head and first chunk, then close the connection."""
    payload = orjson.dumps(
        {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    gw.stream_and_hang_up(payload, {"Authorization": f"Bearer sk-{name}"})


def test_concurrency_limit_and_slot_release(gateway: Any, fake_openai: FakeOpenAIUpstream) -> None:
    gw = gateway()
    setup(gw, fake_openai, timeout=400, stream_timeout=400)
    add_key(gw, "two", rate_limit={"concurrency": 2})
    add_key(gw, "one", rate_limit={"concurrency": 1})
    ready(gw, "two", "one")
    slow_stream = Reply(chunk_delay_s=0.3, chunks=4)

    # two slow streams hold both slots; a third concurrent request is refused
    fake_openai.script(slow_stream, slow_stream)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        streams = [pool.submit(chat, gw, "two", stream=True) for _ in range(2)]
        fake_openai.wait_for_requests(2)
        third = chat(gw, "two")
        assert third.status == 429, third.text
        assert error(third)["message"] == "concurrency limit exceeded"
        assert third.headers["retry-after"] == "1"
        done = [f.result() for f in streams]
    assert [r.status for r in done] == [200, 200]
    assert all(r.sse_data()[-1] == "[DONE]" for r in done)
    assert metric(gw, "aisix_ratelimit_rejections_total", scope="concurrency", layer="api_key") == 1
    # both slots came back after success: two concurrent requests are admitted again (polled:
    # a slot is released just after the response's last byte, which the client may beat)
    fake_openai.default = Reply(delay_s=0.2)
    wait_for(
        lambda: statuses(parallel([lambda: chat(gw, "two")] * 2)) == [200, 200],
        3.0,
        "both slots to be free",
    )
    fake_openai.default = Reply()

    # one slot: released after an upstream error, a timeout, a mid-stream failure and a
    # client disconnect mid-stream (each next request is admitted)
    fake_openai.script(Reply.error(500))
    assert chat(gw, "one").status == 502
    assert chat(gw, "one").status == 200
    fake_openai.script(Reply(delay_s=1.0))
    timed_out = chat(gw, "one")
    assert timed_out.status == 504, timed_out.text
    assert chat(gw, "one").status == 200
    fake_openai.script(Reply(cut_after_chunks=2, chunks=4))
    cut = chat(gw, "one", stream=True)
    assert cut.status == 200 and "error" in cut.sse_data()[-1], cut.text
    wait_for(lambda: chat(gw, "one").status == 200, 3.0, "the slot of the failed stream")

    fake_openai.script(Reply(chunk_delay_s=0.3, chunks=8))
    _hang_up_mid_stream(gw, "one")
    # the slot frees once the gateway notices the disconnect (a refusal meanwhile takes nothing)
    wait_for(lambda: chat(gw, "one").status == 200, 3.0, "the slot of the abandoned stream")
    # and it was really held while the stream ran: one slow stream blocks the next request
    fake_openai.script(Reply(chunk_delay_s=0.3, chunks=4))
    seen = len(fake_openai.model_requests())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(chat, gw, "one", stream=True)
        wait_for(lambda: len(fake_openai.model_requests()) > seen, 3.0, "the stream to start")
        assert chat(gw, "one").status == 429
        assert running.result().status == 200


# --- budgets ---------------------------------------------------------------------------------


def test_block_budget_holds_under_parallel_requests(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway()
    setup(gw, fake_openai, pricing=PRICING)
    key_id = add_key(gw, "budget", budget={"limit_usd": 0.1, "period": "day", "mode": "block"})
    ready(gw, "budget")
    fake_openai.default = Reply(delay_s=0.3, usage=USAGE_21)
    clear_of_window_edge(86400, 15)  # one budget day (and one usage hour) for the whole test

    # each request reserves its worst case (0.021); 4 fit in 0.1, the 5th would not
    responses = parallel([lambda: chat(gw, "budget")] * 10)
    assert statuses(responses) == [200] * 4 + [429] * 6, [r.text for r in responses]
    for refused in (r for r in responses if r.status == 429):
        assert_budget_refusal(refused, "api_key", key_id, 0.1)
    assert len(fake_openai.model_requests()) == 4

    usage = wait_usage(gw, key_id, 4, spent=4 * COST_21)
    start, end = day_bounds()
    assert usage["api_key_id"] == key_id
    assert usage["from"] == rfc3339(start)  # default: start of the budget period
    now = datetime.now(UTC)
    next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert usage["to"] == rfc3339(next_hour), usage
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        4,
        80,
        84,
    )
    assert usage["cost_usd"] == pytest.approx(0.084)
    budget = usage["budget"]
    assert budget["limit_usd"] == pytest.approx(0.1)
    assert (budget["period"], budget["mode"]) == ("day", "block")
    assert budget["period_start"] == rfc3339(start)
    assert budget["period_resets_at"] == rfc3339(end)
    assert budget["spent_usd"] == pytest.approx(0.084) and budget["spent_usd"] <= 0.1
    assert budget["reserved_usd"] == 0
    assert budget["remaining_usd"] == pytest.approx(0.016)

    # spent 0.084 + 0.021 > 0.1: refused, also through the SDK
    after = assert_budget_refusal(chat(gw, "budget"), "api_key", key_id, 0.1)
    assert after["spent_usd"] == pytest.approx(0.084)
    client = gw.openai_client("sk-budget")
    with pytest.raises(openai.RateLimitError) as refused_sdk:
        client.chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": "hi"}], max_tokens=20
        )
    assert refused_sdk.value.code == "budget_exceeded"
    assert refused_sdk.value.type == "billing_error"
    # a smaller request still fits: 0.084 + (1 + 10) * 0.001 <= 0.1
    fake_openai.default = Reply(
        usage={"prompt_tokens": 1, "completion_tokens": 10, "total_tokens": 11}
    )
    assert chat(gw, "budget", max_tokens=10).status == 200
    assert metric(gw, "aisix_budget_rejections_total", scope="api_key") == 8
    final = wait_usage(gw, key_id, 5, spent=0.095)
    assert final["budget"]["spent_usd"] <= 0.1


def test_warn_budget_never_refuses_and_counts_the_crossing(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway()
    setup(gw, fake_openai, pricing=PRICING)
    key_id = add_key(gw, "warn", budget={"limit_usd": 0.03, "period": "day", "mode": "warn"})
    ready(gw, "warn")
    fake_openai.default = Reply(usage=USAGE_21)
    clear_of_window_edge(86400, 15)

    assert chat(gw, "warn").status == 200
    assert metric(gw, "aisix_budget_warnings_total", scope="api_key") == 0
    for _ in range(3):  # 0.042, 0.063, 0.084: past the limit, still served
        response = chat(gw, "warn")
        assert response.status == 200, response.text
    assert metric(gw, "aisix_budget_warnings_total", scope="api_key") >= 1
    usage = wait_usage(gw, key_id, 4, spent=0.084)
    assert usage["budget"]["mode"] == "warn"
    assert usage["budget"]["remaining_usd"] == 0
    # logged once per period, not per request
    warnings = [ln for ln in gw.stderr_text().splitlines() if "warn budget" in ln]
    assert len(warnings) == 1, warnings


def test_budget_policies_crud_and_scopes(gateway: Any, fake_openai: FakeOpenAIUpstream) -> None:
    gw = gateway()
    pk, _ = setup(gw, fake_openai, pricing=PRICING)
    model_b = gw.create_model("m-b", pk, pricing=PRICING, cooldown={"enabled": False}, retries=0)
    pk_c = gw.create_provider_key(fake_openai.url, display_name="openai-c")
    gw.create_model("m-c", pk_c, pricing=PRICING, cooldown={"enabled": False}, retries=0)
    add_key(gw, "team1", team_id="team-b")
    add_key(gw, "team2", team_id="team-b")
    add_key(gw, "user1", user_id="user-z")
    add_key(gw, "plain", rate_limit={"rpd": 10})
    ready(gw, "team1", "team2", "user1", "plain")
    fake_openai.default = Reply(usage=USAGE_21)
    # 0.03: one request (0.021) fits, a second does not
    base = {"limit_usd": 0.03, "period": "day"}
    clear_of_window_edge(86400, 20)

    # CRUD and validation
    team = {**base, "name": "team-budget", "scope": "team", "scope_ref": "team-b"}
    created = write(gw, "POST", "/budget_policies", team)
    assert created.status == 201 and created.json["revision"] == 1
    team_pid = created.json["id"]
    value = created.json["value"]
    assert value["limit_usd"] == 0.03 and value["scope_ref"] == "team-b"
    assert value.get("mode", "block") == "block"
    assert gw.admin("GET", f"/budget_policies/{team_pid}").json == created.json
    updated = write(gw, "PUT", f"/budget_policies/{team_pid}", {**team, "mode": "block"})
    assert updated.status == 200 and updated.json["revision"] == 2
    for bad in (
        {**base, "name": "b1", "scope": "provider_key", "scope_ref": "no-such-pk"},
        {**base, "name": "b2", "scope": "model", "scope_ref": "no-such-model"},
        {**base, "name": "b3", "scope": "api_key", "scope_ref": "x"},
        {**base, "name": "b4", "scope": "team", "scope_ref": "t", "period": "year"},
        {**base, "name": "b5", "scope": "team", "scope_ref": "t", "limit_usd": 0},
        {**base, "name": "b6", "scope": "team", "scope_ref": "t", "mode": "soft"},
        {**base, "name": "b7", "scope": "team", "scope_ref": "t", "max_budget_usd": 1},
    ):
        response = gw.admin("POST", "/budget_policies", bad)
        assert response.status == 400, (bad, response.text)
    assert gw.admin("POST", "/budget_policies", team).status == 409  # name in use
    user_pid = write(
        gw,
        "POST",
        "/budget_policies",
        {**base, "name": "u", "scope": "user", "scope_ref": "user-z"},
    ).json["id"]
    model_pid = write(
        gw,
        "POST",
        "/budget_policies",
        {**base, "name": "m", "scope": "model", "scope_ref": model_b},
    ).json["id"]
    pk_pid = write(
        gw,
        "POST",
        "/budget_policies",
        {**base, "name": "p", "scope": "provider_key", "scope_ref": pk_c},
    ).json["id"]
    listed = gw.admin("GET", "/budget_policies")
    assert listed.json["total"] == 4
    assert [e["id"] for e in listed.json["list"]] == [team_pid, user_pid, model_pid, pk_pid]
    assert gw.admin("DELETE", f"/models/{model_b}").status == 409  # referenced by the policy

    # team: spend of every key of the team
    assert chat(gw, "team1").status == 200
    assert_budget_refusal(chat(gw, "team2"), "team", "team-b", 0.03)
    # user
    assert chat(gw, "user1").status == 200
    assert_budget_refusal(chat(gw, "user1"), "user", "user-z", 0.03)
    # a `total` budget never resets: no Retry-After, no reset time
    total_pid = write(
        gw,
        "POST",
        "/budget_policies",
        {"limit_usd": 0.02, "period": "total", "name": "t", "scope": "user", "scope_ref": "u-t"},
    ).json["id"]
    add_key(gw, "forever", user_id="u-t")
    ready(gw, "forever")
    fake_openai.script(Reply(usage={"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6}))
    assert chat(gw, "forever", max_tokens=5).status == 200  # costs 0.006
    refused_total = chat(gw, "forever")  # 0.006 spent + 0.021 > 0.02
    err = assert_budget_refusal(refused_total, "user", "u-t", 0.02, period="total")
    assert "retry-after" not in refused_total.headers
    assert err.get("period_resets_at") is None
    write(gw, "DELETE", f"/budget_policies/{total_pid}")
    # model: requests to that alias, whatever the key
    assert chat(gw, "plain", alias="m-b").status == 200
    assert_budget_refusal(chat(gw, "plain", alias="m-b"), "model", model_b, 0.03)
    # provider key: attempts sent with it
    assert chat(gw, "plain", alias="m-c").status == 200
    assert_budget_refusal(chat(gw, "plain", alias="m-c"), "provider_key", pk_c, 0.03)
    assert metric(gw, "aisix_budget_rejections_total", scope="provider_key") == 1
    # the others are untouched; and the key's request count taken at the gate was given back
    # when the provider-key budget refused the attempt: 2 admitted so far, this is the 3rd
    # (10 - 3 = 7; 6 if the refused attempt had kept its count)
    untouched = chat(gw, "plain")
    assert untouched.status == 200, untouched.text
    assert untouched.headers["x-ratelimit-remaining-requests"] == "7"
    assert len(fake_openai.model_requests()) == 6

    deleted = write(gw, "DELETE", f"/budget_policies/{team_pid}")
    assert deleted.json == {"deleted": True, "id": team_pid}
    assert gw.admin("GET", f"/budget_policies/{team_pid}").status == 404
    assert chat(gw, "team2").status == 200


# --- usage reads -----------------------------------------------------------------------------


def test_usage_grouped_by_key_model_and_team(gateway: Any, fake_openai: FakeOpenAIUpstream) -> None:
    gw = gateway()
    pk, model_a = setup(gw, fake_openai, pricing=PRICING)
    model_b = gw.create_model(
        "m-b",
        pk,
        pricing={"input_per_million": 2000, "output_per_million": 2000},
        cooldown={"enabled": False},
        retries=0,
    )
    k1 = add_key(gw, "one", team_id="t1", display_name="app-one")
    k2 = add_key(gw, "two")
    ready(gw, "one", "two")
    fake_openai.default = Reply(usage=USAGE_21)
    clear_of_window_edge(3600, 10)  # every request and read in one usage hour

    assert chat(gw, "one").status == 200
    assert chat(gw, "one").status == 200
    fake_openai.script(Reply.error(500))
    assert chat(gw, "one").status == 502  # admitted: counted, no tokens, no cost
    assert chat(gw, "two", alias="m-b").status == 200
    assert chat(gw, "two").status == 200
    assert chat(gw, "two", alias="no-such-model").status == 404  # not counted

    wait_usage(gw, k1, 3)
    wait_usage(gw, k2, 2)

    def usage(query: str) -> dict[str, Any]:
        response = gw.admin("GET", "/usage" + query)
        assert response.status == 200, response.text
        return dict(response.json)

    def numbers(row: dict[str, Any]) -> tuple[Any, ...]:
        return (
            row["key"],
            row["requests"],
            row["prompt_tokens"],
            row["completion_tokens"],
            row["total_tokens"],
            round(row["cost_usd"], 9),
        )

    by_key = usage("?group_by=api_key")
    assert by_key["group_by"] == "api_key"
    # sorted by cost, descending: key two (0.042 + 0.021) before key one (0.042)
    assert [numbers(r) for r in by_key["rows"]] == [
        (k2, 2, 2, 40, 42, 0.063),
        (k1, 3, 2, 40, 42, 0.042),
    ]
    assert [r["display_name"] for r in by_key["rows"]] == [None, "app-one"]
    assert usage("")["rows"] == by_key["rows"]  # api_key is the default

    by_model = usage("?group_by=model")
    assert [numbers(r) for r in by_model["rows"]] == [
        (model_a, 4, 3, 60, 63, 0.063),
        (model_b, 1, 1, 20, 21, 0.042),
    ]
    assert [r["display_name"] for r in by_model["rows"]] == [ALIAS, "m-b"]

    by_team = usage("?group_by=team")
    assert [numbers(r) for r in by_team["rows"]] == [
        (None, 2, 2, 40, 42, 0.063),
        ("t1", 3, 2, 40, 42, 0.042),
    ]

    # time ranges: from rounds down and to up to the hour; the current hour is included
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    ranged = usage(f"?group_by=model&from={rfc3339(now)}&to={rfc3339(now)}")
    assert (ranged["from"], ranged["to"]) == (rfc3339(hour), rfc3339(hour + timedelta(hours=1)))
    assert ranged["rows"] == by_model["rows"]
    later = hour + timedelta(hours=2)
    empty = usage(f"?from={rfc3339(later)}&to={rfc3339(later + timedelta(hours=1))}")
    assert empty["rows"] == []
    one_key = key_usage(gw, k1, f"?from={rfc3339(hour - timedelta(days=1))}&to={rfc3339(now)}")
    assert (one_key["requests"], one_key["total_tokens"]) == (3, 42)
    assert one_key["cost_usd"] == pytest.approx(0.042)
    assert one_key["from"] == rfc3339(hour - timedelta(days=1))
    assert one_key.get("budget") is None  # the key has no budget

    for bad in (
        f"/usage?from={rfc3339(later)}&to={rfc3339(hour)}",
        f"/apikeys/{k1}/usage?from={rfc3339(later)}&to={rfc3339(hour)}",
        "/usage?from=yesterday",
        "/usage?group_by=provider",
    ):
        response = gw.admin("GET", bad)
        assert response.status == 400, (bad, response.text)
        assert "error_msg" in response.json
    assert gw.admin("GET", "/apikeys/no-such-key/usage").status == 404
    assert gw.admin("GET", "/usage", key=None).status == 401


def test_spend_survives_a_restart(gateway: Any, fake_openai: FakeOpenAIUpstream) -> None:
    gw = gateway()
    setup(gw, fake_openai, pricing=PRICING)
    key_id = add_key(gw, "durable", budget={"limit_usd": 0.05, "period": "day"})
    ready(gw, "durable")
    fake_openai.default = Reply(usage=USAGE_21)
    clear_of_window_edge(86400, 20)
    # an upstream failure releases its reservation and costs nothing
    fake_openai.script(Reply.error(500))
    assert [chat(gw, "durable").status for _ in range(4)] == [502, 200, 200, 429]
    wait_usage(gw, key_id, 3, spent=0.042)

    gw.restart()

    refused = chat(gw, "durable")
    err = assert_budget_refusal(refused, "api_key", key_id, 0.05)
    assert err["spent_usd"] == pytest.approx(0.042)
    usage = key_usage(gw, key_id)
    assert usage["requests"] == 3 and usage["cost_usd"] == pytest.approx(0.042)
    assert usage["budget"]["spent_usd"] == pytest.approx(0.042)
    assert len(fake_openai.model_requests()) == 3
