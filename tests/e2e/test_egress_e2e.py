"""The egress proxy through a real gateway (issue 9 item 3): `upstream.proxy.url` carries
every upstream call through a forward proxy, a provider key can opt out, and with
`only_opted_in` only keys that opt in use it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_helpers import ALIAS, CALLER_KEY, Gateway

from fakes.connect_proxy import ConnectProxy
from fakes.openai_upstream import FakeOpenAIUpstream

CHAT = {"model": ALIAS, "messages": [{"role": "user", "content": "via proxy"}]}


@pytest.fixture
def forward_proxy() -> Iterator[ConnectProxy]:
    loop = asyncio.new_event_loop()
    proxy = ConnectProxy()
    ready, stop = threading.Event(), threading.Event()

    def run() -> None:
        async def main() -> None:
            async with proxy:
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.05)

        try:
            loop.run_until_complete(main())
            pending = asyncio.all_tasks(loop)  # connections the gateway kept alive
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield proxy
    finally:
        stop.set()
        thread.join(10)


def gateway_with_proxy(gateway: Any, proxy: ConnectProxy, **proxy_settings: Any) -> Gateway:
    gw: Gateway = gateway({"upstream": {"proxy": {"url": proxy.url(), **proxy_settings}}})
    return gw


def test_every_key_goes_through_the_proxy_unless_it_opts_out(
    gateway: Any, fake_openai: FakeOpenAIUpstream, forward_proxy: ConnectProxy
) -> None:
    gw = gateway_with_proxy(gateway, forward_proxy)
    gw.seed(fake_openai.url)
    answer = gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=CALLER_KEY)
    assert answer.status == 200 and answer.json["choices"][0]["message"]["content"] == (
        "echo: via proxy"
    )
    assert any("/v1/chat/completions" in line for line in forward_proxy.forwarded)
    seen = len(forward_proxy.forwarded)
    direct = gw.create_provider_key(fake_openai.url, display_name="direct", egress_proxy=False)
    gw.create_model("direct-model", direct)
    gw.create_api_key("sk-direct", ["direct-model"])
    gw.wait_for_key("sk-direct", "direct-model")
    body = {**CHAT, "model": "direct-model"}
    assert gw.proxy("POST", "/v1/chat/completions", body, api_key="sk-direct").status == 200
    assert len(forward_proxy.forwarded) == seen  # went direct


def test_only_opted_in_keys_use_the_proxy(
    gateway: Any, fake_openai: FakeOpenAIUpstream, forward_proxy: ConnectProxy
) -> None:
    gw = gateway_with_proxy(gateway, forward_proxy, only_opted_in=True)
    gw.seed(fake_openai.url)
    assert gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=CALLER_KEY).status == 200
    assert forward_proxy.forwarded == []
    opted = gw.create_provider_key(fake_openai.url, display_name="opted", egress_proxy=True)
    gw.create_model("opted-model", opted)
    gw.create_api_key("sk-opted", ["opted-model"])
    gw.wait_for_key("sk-opted", "opted-model")
    body = {**CHAT, "model": "opted-model"}
    assert gw.proxy("POST", "/v1/chat/completions", body, api_key="sk-opted").status == 200
    assert len(forward_proxy.forwarded) == 1
