"""The fake Azure OpenAI resource and fake Entra ID, proven with the official clients first.

`openai.AzureOpenAI` (the SDK's own deployment URLs, `api-version`, `api-key` and
`azure_ad_token` / `azure_ad_token_provider` auth) runs chat, streams, completions and
embeddings against `FakeAzureOpenAI` and gets Azure's answers and errors as typed SDK objects;
the token provider mints its tokens from `FakeEntraID` with a client-credentials form, and
Microsoft's own MSAL confidential client obtains (and is refused) tokens from it over TLS, so
the fakes are known to speak the protocols the gateway will be tested against.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msal
import openai
import orjson
import pytest
import requests
import trustme

from fakes.azure_upstream import (
    AzureReply,
    EntraSetup,
    FakeAzureOpenAI,
    FakeEntraID,
    prompt_filtered,
    rate_limited,
)
from fakes.openai_upstream import Reply

API_VERSION = "2024-10-21"
MESSAGES: Any = [{"role": "user", "content": "hello azure"}]


def client(azure: FakeAzureOpenAI, **auth: Any) -> openai.AzureOpenAI:
    if not auth:
        auth = {"api_key": azure.api_key}
    return openai.AzureOpenAI(
        azure_endpoint=azure.url, api_version=API_VERSION, max_retries=0, timeout=10, **auth
    )


def mint(entra: FakeEntraID, setup: EntraSetup, **overrides: str) -> tuple[int, Any]:
    """A client-credentials grant as a confidential client sends it."""
    form = {
        "grant_type": "client_credentials",
        "client_id": setup.client_id,
        "client_secret": setup.client_secret,
        "scope": "https://cognitiveservices.azure.com/.default",
        **overrides,
    }
    request = urllib.request.Request(
        entra.token_url(setup.tenant),
        data=urllib.parse.urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def test_chat_with_the_resource_key(azure: FakeAzureOpenAI) -> None:
    answer = client(azure).chat.completions.create(model="gpt4o", messages=MESSAGES)
    assert answer.choices[0].message.content == "echo: hello azure"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "gpt-4o-2024-08-06"  # Azure names the model, not the deployment
    extra = answer.model_extra or {}
    assert extra["prompt_filter_results"][0]["prompt_index"] == 0
    assert answer.usage is not None and answer.usage.total_tokens > 0
    [seen] = azure.deployment_requests()
    assert seen.path == "/openai/deployments/gpt4o/chat/completions"
    assert seen.query == f"api-version={API_VERSION}"
    assert seen.headers["api-key"] == azure.api_key
    assert "authorization" not in seen.headers


def test_stream_opens_with_the_prompt_filter_chunk(azure: FakeAzureOpenAI) -> None:
    stream = client(azure).chat.completions.create(
        model="gpt4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices == [] and chunks[0].id == ""
    assert (chunks[0].model_extra or {})["prompt_filter_results"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello azure"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_output_filter_stops_with_content_filter(azure: FakeAzureOpenAI) -> None:
    azure.script(AzureReply(content_filter=True), AzureReply(content_filter=True))
    answer = client(azure).chat.completions.create(model="gpt4o", messages=MESSAGES)
    assert answer.choices[0].finish_reason == "content_filter"
    assert answer.choices[0].message.content is None
    stream = client(azure).chat.completions.create(model="gpt4o", messages=MESSAGES, stream=True)
    finishes = [c.choices[0].finish_reason for c in stream if c.choices]
    assert finishes[-1] == "content_filter"


def test_completions_and_embeddings(azure: FakeAzureOpenAI) -> None:
    sdk = client(azure)
    completion = sdk.completions.create(model="gpt4o", prompt="say", max_tokens=5)
    assert completion.choices[0].text == "echo: say"
    streamed = sdk.completions.create(model="gpt4o", prompt="say", stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "echo: say"
    vectors = sdk.embeddings.create(model="gpt4o", input=["a", "b"], dimensions=8)
    assert [len(v.embedding) for v in vectors.data] == [8, 8]
    paths = [r.path for r in azure.deployment_requests()]
    assert paths == [
        "/openai/deployments/gpt4o/completions",
        "/openai/deployments/gpt4o/completions",
        "/openai/deployments/gpt4o/embeddings",
    ]


def test_entra_tokens_from_the_fake_identity_provider(
    azure: FakeAzureOpenAI, entra: FakeEntraID, entra_setup: EntraSetup
) -> None:
    status, grant = mint(entra, entra_setup)
    assert status == 200
    assert grant["token_type"] == "Bearer" and grant["expires_in"] == 3599
    answer = client(azure, azure_ad_token=grant["access_token"]).chat.completions.create(
        model="gpt4o", messages=MESSAGES
    )
    assert answer.choices[0].message.content == "echo: hello azure"

    def provider() -> str:
        code, body = mint(entra, entra_setup)
        assert code == 200
        return str(body["access_token"])

    with_provider = client(azure, azure_ad_token_provider=provider)
    for _ in range(2):
        with_provider.chat.completions.create(model="gpt4o", messages=MESSAGES)
    assert entra.token_requests == 3  # the SDK calls the provider on every request
    bearers = [r.headers["authorization"] for r in azure.deployment_requests()]
    assert bearers == [f"Bearer {t}" for t in entra.issued_tokens()]


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "nobody"}, 400, "unauthorized_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"scope": "https://graph.microsoft.com/.default"}, 400, "invalid_scope"),
    ],
)
def test_the_identity_provider_checks_the_form(
    entra: FakeEntraID, entra_setup: EntraSetup, overrides: dict[str, str], status: int, error: str
) -> None:
    code, body = mint(entra, entra_setup, **overrides)
    assert (code, body["error"]) == (status, error)
    assert body["error_description"].startswith("AADSTS")
    assert entra.token_requests == 1 and entra.issued_tokens() == []


def test_bad_credentials_are_azure_401s(azure: FakeAzureOpenAI, entra: FakeEntraID) -> None:
    with pytest.raises(openai.AuthenticationError) as wrong_key:
        client(azure, api_key="not-the-key").chat.completions.create(
            model="gpt4o", messages=MESSAGES
        )
    assert "invalid subscription key" in wrong_key.value.message
    with pytest.raises(openai.AuthenticationError) as bad_token:
        client(azure, azure_ad_token="forged").chat.completions.create(
            model="gpt4o", messages=MESSAGES
        )
    assert bad_token.value.status_code == 401
    assert "Access token is missing, invalid" in bad_token.value.response.text
    entra.lifetime_s = 0  # issued already expired
    with pytest.raises(openai.AuthenticationError):
        client(azure, azure_ad_token=entra.issue()).chat.completions.create(
            model="gpt4o", messages=MESSAGES
        )


def test_azure_error_shapes(azure: FakeAzureOpenAI) -> None:
    sdk = client(azure)
    azure.script(prompt_filtered(), rate_limited(7))
    with pytest.raises(openai.BadRequestError) as filtered:
        sdk.chat.completions.create(model="gpt4o", messages=MESSAGES)
    assert filtered.value.code == "content_filter"
    body: Any = filtered.value.body
    assert body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="gpt4o", messages=MESSAGES)
    headers = limited.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("7", "7000")
    assert headers["x-ratelimit-reset-requests"] == "7s"
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="no-such-deployment", messages=MESSAGES)
    assert missing.value.code == "DeploymentNotFound"
    unversioned = openai.OpenAI(base_url=azure.url + "/openai/deployments/gpt4o", api_key="x")
    with pytest.raises(openai.NotFoundError):
        unversioned.with_options(max_retries=0).chat.completions.create(
            model="gpt4o", messages=MESSAGES
        )


def test_the_openai_knobs_still_apply(azure: FakeAzureOpenAI) -> None:
    azure.script(Reply.error(500), Reply(cut_after_chunks=2))
    sdk = client(azure)
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="gpt4o", messages=MESSAGES)
    with pytest.raises(openai.APIError):
        list(sdk.chat.completions.create(model="gpt4o", messages=MESSAGES, stream=True))
    assert len(azure.model_requests()) == 2


@pytest.fixture
def https_entra(entra_setup: EntraSetup, tmp_path: Path) -> Iterator[tuple[FakeEntraID, str]]:
    """The fake Entra ID over TLS (MSAL accepts https authorities only) and its CA file."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "entra-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    fake = FakeEntraID({entra_setup.client_id: entra_setup.client_secret}, tls=context).start()
    fake.tenants = {entra_setup.tenant}
    try:
        yield fake, str(ca_file)
    finally:
        fake.stop()


def test_msal_confidential_client_against_the_fake_identity_provider(
    https_entra: tuple[FakeEntraID, str], entra_setup: EntraSetup
) -> None:
    entra, ca_file = https_entra

    def app(secret: str) -> msal.ConfidentialClientApplication:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the test CA
        session.verify = ca_file
        return msal.ConfidentialClientApplication(
            entra_setup.client_id,
            client_credential=secret,
            authority=f"{entra.url}/{entra_setup.tenant}",
            validate_authority=False,
            instance_discovery=False,
            http_client=session,
        )

    client_app = app(entra_setup.client_secret)
    scopes = ["https://cognitiveservices.azure.com/.default"]
    granted = client_app.acquire_token_for_client(scopes=scopes)
    assert granted is not None and granted["token_type"] == "Bearer", granted
    assert entra.valid(granted["access_token"])
    assert granted["expires_in"] == 3599
    again = client_app.acquire_token_for_client(scopes=scopes)  # MSAL's own cache answers
    assert again is not None and again["access_token"] == granted["access_token"]
    assert entra.token_requests == 1
    refused = app("wrong-secret").acquire_token_for_client(scopes=scopes)
    assert refused is not None and refused["error"] == "invalid_client"
    assert "AADSTS7000215" in refused["error_description"]
    assert entra.token_requests == 2 and len(entra.issued_tokens()) == 1
