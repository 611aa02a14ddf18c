"""Stored Responses API answers on the etcd resource store (issue 11 item 1): one replica
stores, another continues with `previous_response_id` and reads it; another key gets 404;
DELETE removes it for both. The answers live outside the resource prefix (no reloads)."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from e2e_helpers import ALIAS, CALLER_KEY, Gateway, wait_for

from fakes.etcd_server import EtcdServer
from fakes.openai_upstream import FakeOpenAIUpstream


def test_two_replicas_share_stored_responses(
    gateway: Any, fake_openai: FakeOpenAIUpstream, own_etcd: EtcdServer
) -> None:
    etcd = {"etcd": {"endpoints": [own_etcd.url], "prefix": "/aisix-responses-test"}}
    first: Gateway = gateway(etcd)
    second: Gateway = gateway(etcd)
    first.seed(fake_openai.url)
    second.wait_for_key(CALLER_KEY)
    revision = first.status("/status/config").json["snapshot"]["revision"]
    answer = first.openai_client().responses.create(model=ALIAS, input="remember me")
    assert answer.output_text == "echo: remember me"

    def stored_on_the_other() -> Any:
        try:
            return second.openai_client().responses.retrieve(answer.id)
        except openai.NotFoundError:
            return None

    again = wait_for(stored_on_the_other, timeout=5.0, message="the answer on replica two")
    assert again.output_text == "echo: remember me"
    follow = second.openai_client().responses.create(
        model=ALIAS, previous_response_id=answer.id, input="and now?"
    )
    history = fake_openai.model_requests()[-1].json["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert follow.previous_response_id == answer.id
    # no resource reload was caused by storing answers
    assert first.status("/status/config").json["snapshot"]["revision"] == revision
    first.create_api_key("sk-someone-else", [ALIAS])
    second.wait_for_key("sk-someone-else")
    with pytest.raises(openai.NotFoundError):
        second.openai_client(api_key="sk-someone-else").responses.retrieve(answer.id)
    gone = first.proxy("DELETE", f"/v1/responses/{answer.id}", api_key=CALLER_KEY)
    assert gone.status == 200
    missing = second.proxy("GET", f"/v1/responses/{answer.id}", api_key=CALLER_KEY)
    assert missing.status == 404
