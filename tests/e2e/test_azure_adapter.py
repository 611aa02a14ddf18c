"""The azure-openai adapter through the gateway: official SDKs → aisix → fake Azure OpenAI.

Both credential kinds (the resource key; Entra ID client credentials minted at a fake token
endpoint named by the secret's `token_url`), chat, streams, completions and embeddings relayed
to the deployment URLs with `api-version`, Anthropic Messages translated to the chat
deployment, Azure's content filter (output: `finish_reason: content_filter`, prompt: 400
`content_filter`), Azure's errors mapped per contract §6.4, the token cached across calls and
refreshed before it expires, and the client secret never in answers, errors or logs.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from e2e_helpers import CALLER_KEY, Gateway, wait_for

from fakes.azure_upstream import (
    AzureReply,
    EntraSetup,
    FakeAzureOpenAI,
    FakeEntraID,
    prompt_filtered,
    rate_limited,
)
from fakes.openai_upstream import Reply

ALIAS = "azure-gpt4o"
DEPLOYMENT = "gpt4o"
API_VERSION = "2024-10-21"
MESSAGES: Any = [{"role": "user", "content": "hello azure"}]


def seed(gw: Gateway, azure: FakeAzureOpenAI, secret: str, alias: str = ALIAS) -> str:
    key_id = gw.create(
        "provider_keys",
        {
            "display_name": f"azure-{alias}",
            "adapter": "azure-openai",
            "provider": "azure",
            "secret": secret,
            "api_base": azure.url + "/openai/",  # pasted with its /openai/ suffix
            "azure": {"api_version": API_VERSION},
        },
    )
    gw.create(
        "models",
        {
            "display_name": alias,
            "provider": "azure",
            "model_name": DEPLOYMENT,
            "provider_key_id": key_id,
        },
    )
    return key_id


@pytest.fixture
def keyed(gateway: Any, azure: FakeAzureOpenAI) -> Gateway:
    """A gateway with ALIAS on the resource key."""
    gw: Gateway = gateway()
    seed(gw, azure, azure.api_key)
    gw.create_api_key(CALLER_KEY, ["*"])
    gw.wait_for_key(CALLER_KEY, ALIAS)
    return gw


@pytest.fixture
def entra_gw(
    gateway: Any, azure: FakeAzureOpenAI, entra: FakeEntraID, entra_setup: EntraSetup
) -> Gateway:
    """A gateway with ALIAS on Entra ID client credentials."""
    gw: Gateway = gateway()
    seed(gw, azure, entra_setup.secret(entra))
    gw.create_api_key(CALLER_KEY, ["*"])
    gw.wait_for_key(CALLER_KEY, ALIAS)
    return gw


def anthropic_client(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.proxy_url, api_key=CALLER_KEY, max_retries=0, timeout=15)


def test_chat_with_the_resource_key(keyed: Gateway, azure: FakeAzureOpenAI) -> None:
    answer = keyed.openai_client().chat.completions.create(
        model=ALIAS, messages=MESSAGES, max_tokens=20
    )
    assert answer.model == ALIAS
    assert answer.choices[0].message.content == "echo: hello azure"
    assert (answer.model_extra or {})["prompt_filter_results"][0]["prompt_index"] == 0
    assert answer.usage is not None and answer.usage.total_tokens > 0
    [seen] = azure.deployment_requests()
    assert seen.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert seen.query == f"api-version={API_VERSION}"
    assert seen.headers["api-key"] == azure.api_key
    assert "authorization" not in seen.headers
    assert seen.json["model"] == DEPLOYMENT and seen.json["max_tokens"] == 20


def test_streams_with_and_without_the_usage_chunk(keyed: Gateway, azure: FakeAzureOpenAI) -> None:
    sdk = keyed.openai_client()
    chunks = list(
        sdk.chat.completions.create(
            model=ALIAS, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert {c.model for c in chunks} == {ALIAS}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "echo: hello azure"
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    plain = list(sdk.chat.completions.create(model=ALIAS, messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in plain)
    assert [c.choices[0].finish_reason for c in plain if c.choices][-1] == "stop"
    for seen in azure.deployment_requests():
        assert seen.json["stream_options"]["include_usage"] is True
        assert seen.headers["accept"] == "text/event-stream"


def test_completions_and_embeddings(keyed: Gateway, azure: FakeAzureOpenAI) -> None:
    sdk = keyed.openai_client()
    completion = sdk.completions.create(model=ALIAS, prompt="say", max_tokens=5)
    assert completion.model == ALIAS and completion.choices[0].text == "echo: say"
    streamed = sdk.completions.create(model=ALIAS, prompt="say", stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "echo: say"
    vectors = sdk.embeddings.create(model=ALIAS, input=["a", "b"], dimensions=8)
    assert vectors.model == ALIAS and [len(v.embedding) for v in vectors.data] == [8, 8]
    assert [(r.path, r.query) for r in azure.deployment_requests()] == [
        (f"/openai/deployments/{DEPLOYMENT}/completions", f"api-version={API_VERSION}"),
        (f"/openai/deployments/{DEPLOYMENT}/completions", f"api-version={API_VERSION}"),
        (f"/openai/deployments/{DEPLOYMENT}/embeddings", f"api-version={API_VERSION}"),
    ]


def test_anthropic_messages_are_translated_to_the_chat_deployment(
    keyed: Gateway, azure: FakeAzureOpenAI
) -> None:
    client = anthropic_client(keyed)
    message = client.messages.create(
        model=ALIAS, max_tokens=50, system="Be brief.", messages=MESSAGES
    )
    assert message.model == ALIAS
    assert message.content[0].type == "text" and message.content[0].text == "echo: hello azure"
    assert message.stop_reason == "end_turn"
    with client.messages.stream(model=ALIAS, max_tokens=50, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hello azure" and final.usage.output_tokens > 0
    first, second = azure.deployment_requests()
    assert first.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert first.json["messages"][0] == {"role": "system", "content": "Be brief."}
    assert first.headers["api-key"] == azure.api_key
    assert second.json["stream"] is True


def test_entra_token_is_minted_once_and_cached(
    entra_gw: Gateway, azure: FakeAzureOpenAI, entra: FakeEntraID
) -> None:
    sdk = entra_gw.openai_client()
    for _ in range(3):
        answer = sdk.chat.completions.create(model=ALIAS, messages=MESSAGES)
        assert answer.choices[0].message.content == "echo: hello azure"
    assert "".join(
        c.choices[0].delta.content or ""
        for c in sdk.chat.completions.create(model=ALIAS, messages=MESSAGES, stream=True)
        if c.choices
    ) == ("echo: hello azure")
    assert entra.token_requests == 1
    [token] = entra.issued_tokens()
    for seen in azure.deployment_requests():
        assert seen.headers["authorization"] == f"Bearer {token}"
        assert "api-key" not in seen.headers


def test_entra_token_is_refreshed_before_it_expires(
    gateway: Any, azure: FakeAzureOpenAI, entra: FakeEntraID, entra_setup: EntraSetup
) -> None:
    entra.lifetime_s = 2  # refreshed from half its lifetime on, in the background
    gw: Gateway = gateway()
    seed(gw, azure, entra_setup.secret(entra))
    gw.create_api_key(CALLER_KEY, [ALIAS])
    gw.wait_for_key(CALLER_KEY, ALIAS)
    sdk = gw.openai_client()

    def call_until_refreshed() -> bool:
        answer = sdk.chat.completions.create(model=ALIAS, messages=MESSAGES)
        assert answer.choices[0].message.content == "echo: hello azure"
        # issued, not just asked for: the fake counts a grant request before it answers
        return len(entra.issued_tokens()) >= 2

    wait_for(call_until_refreshed, timeout=15, message="a second token", every=0.1)
    first, second = entra.issued_tokens()[:2]

    def latest_call_uses_the_new_token() -> bool:
        sdk.chat.completions.create(model=ALIAS, messages=MESSAGES)
        return azure.deployment_requests()[-1].headers["authorization"] == f"Bearer {second}"

    wait_for(latest_call_uses_the_new_token, timeout=10, message="the new token", every=0.1)
    assert azure.deployment_requests()[0].headers["authorization"] == f"Bearer {first}"
    # every call carried a token the identity provider had issued and not yet expired: the
    # fake Azure refuses expired tokens with 401, which would have failed a call above


def test_output_content_filter(keyed: Gateway, azure: FakeAzureOpenAI) -> None:
    azure.script(AzureReply(content_filter=True), AzureReply(content_filter=True))
    sdk = keyed.openai_client()
    answer = sdk.chat.completions.create(model=ALIAS, messages=MESSAGES)
    assert answer.choices[0].finish_reason == "content_filter"
    assert answer.choices[0].message.content is None
    chunks = list(sdk.chat.completions.create(model=ALIAS, messages=MESSAGES, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"
    azure.script(AzureReply(content_filter=True))
    refused = anthropic_client(keyed).messages.create(model=ALIAS, max_tokens=50, messages=MESSAGES)
    assert refused.stop_reason == "refusal"


def test_prompt_content_filter_is_a_400_with_azures_code(
    keyed: Gateway, azure: FakeAzureOpenAI
) -> None:
    azure.script(prompt_filtered(), prompt_filtered())
    with pytest.raises(openai.BadRequestError) as caught:
        keyed.openai_client().chat.completions.create(model=ALIAS, messages=MESSAGES)
    assert caught.value.code == "content_filter"
    assert "content management policy" in caught.value.message
    with pytest.raises(anthropic.BadRequestError) as anthropic_caught:
        anthropic_client(keyed).messages.create(model=ALIAS, max_tokens=10, messages=MESSAGES)
    assert anthropic_caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_azure_errors_are_mapped(keyed: Gateway, azure: FakeAzureOpenAI) -> None:
    sdk = keyed.openai_client()
    azure.script(rate_limited(7))
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model=ALIAS, messages=MESSAGES)
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.code == "429"
    azure.script(*[Reply.error(503)] * 3)  # the first call and its two retries
    with pytest.raises(openai.APIStatusError) as server:
        sdk.chat.completions.create(model=ALIAS, messages=MESSAGES)
    assert server.value.status_code == 502 and server.value.code == "upstream_server_error"


def test_a_wrong_resource_key_is_an_upstream_auth_error(
    gateway: Any, azure: FakeAzureOpenAI
) -> None:
    gw: Gateway = gateway()
    seed(gw, azure, "not-the-resource-key")
    gw.create_api_key(CALLER_KEY, [ALIAS])
    gw.wait_for_key(CALLER_KEY, ALIAS)
    response = gw.proxy(
        "POST",
        "/v1/chat/completions",
        {"model": ALIAS, "messages": MESSAGES},
        api_key=CALLER_KEY,
    )
    assert response.status == 502
    assert response.json["error"]["type"] == "upstream_auth_error"
    assert "not-the-resource-key" not in response.text


def test_a_missing_deployment_is_azures_404(gateway: Any, azure: FakeAzureOpenAI) -> None:
    gw: Gateway = gateway()
    key_id = seed(gw, azure, azure.api_key)
    gw.create(
        "models",
        {
            "display_name": "ghost",
            "provider": "azure",
            "model_name": "no-such-deployment",
            "provider_key_id": key_id,
        },
    )
    gw.create_api_key(CALLER_KEY, ["*"])
    gw.wait_for_key(CALLER_KEY, "ghost")
    with pytest.raises(openai.NotFoundError) as caught:
        gw.openai_client().chat.completions.create(model="ghost", messages=MESSAGES)
    assert caught.value.code == "DeploymentNotFound"


def test_refused_client_credentials_never_leak_the_secret(
    gateway: Any, azure: FakeAzureOpenAI, entra: FakeEntraID, entra_setup: EntraSetup
) -> None:
    entra.clients[entra_setup.client_id] = "the-secret-entra-expects"
    gw: Gateway = gateway()
    key_id = seed(gw, azure, entra_setup.secret(entra))
    gw.create_api_key(CALLER_KEY, [ALIAS])
    gw.wait_for_key(CALLER_KEY, ALIAS)
    response = gw.proxy(
        "POST", "/v1/chat/completions", {"model": ALIAS, "messages": MESSAGES}, api_key=CALLER_KEY
    )
    assert response.status == 502, response.text
    error = response.json["error"]
    assert error["type"] == "upstream_auth_error"
    assert "Entra ID token endpoint: 401 invalid_client AADSTS7000215" in error["message"]
    assert azure.deployment_requests() == []  # never called without a token
    streamed = gw.proxy(
        "POST",
        "/v1/chat/completions",
        {"model": ALIAS, "messages": MESSAGES, "stream": True},
        api_key=CALLER_KEY,
    )
    assert streamed.status == 502
    read = gw.admin("GET", f"/provider_keys/{key_id}")
    assert read.json["value"]["secret"] == "***"
    secret = entra_setup.client_secret
    for text in (response.text, streamed.text, read.text, gw.stdout_text(), gw.stderr_text()):
        assert secret not in text


def test_an_unreachable_token_endpoint_is_a_clean_502(
    gateway: Any, azure: FakeAzureOpenAI, entra_setup: EntraSetup, port_factory: Any
) -> None:
    gw: Gateway = gateway()
    dead = f"http://127.0.0.1:{port_factory()}/{entra_setup.tenant}/oauth2/v2.0/token"
    seed(gw, azure, entra_setup.secret(token_url=dead))
    gw.create_api_key(CALLER_KEY, [ALIAS])
    gw.wait_for_key(CALLER_KEY, ALIAS)
    response = gw.proxy(
        "POST", "/v1/chat/completions", {"model": ALIAS, "messages": MESSAGES}, api_key=CALLER_KEY
    )
    assert response.status == 502
    assert response.json["error"]["type"] == "upstream_auth_error"
    assert response.json["error"]["message"].startswith("Entra ID token request failed")
    assert entra_setup.client_secret not in response.text + gw.stdout_text() + gw.stderr_text()
    gw.assert_alive()


def test_responses_api_calls_are_translated_to_the_chat_deployment(
    keyed: Gateway, azure: FakeAzureOpenAI
) -> None:
    answer = keyed.openai_client().responses.create(model=ALIAS, input="hello azure")
    assert answer.model == ALIAS
    assert answer.output_text == "echo: hello azure"
    [seen] = azure.deployment_requests()
    assert seen.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert seen.json["messages"][-1]["content"] in (
        "hello azure",
        [{"type": "text", "text": "hello azure"}],
    )
