"""The fake Gemini / Vertex / OAuth upstream speaks the real protocol: the official
`google-genai` client (pointed at it with `http_options.base_url`) generates, streams, calls
functions, embeds and reads errors; for Vertex, google-auth mints a token from a throwaway
service account and the fake checks the JWT assertion's signature with its public key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google import genai
from google.auth.exceptions import RefreshError
from google.genai import errors, types
from google.oauth2 import service_account

from fakes.gemini_upstream import (
    GOOGLE_TOKEN_AUDIENCE,
    FakeGeminiUpstream,
    GeminiReply,
    ServiceAccount,
)

API_KEY = "AIza-fake-gemini-key"
MODEL = "gemini-2.5-flash"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGeminiUpstream]:
    with FakeGeminiUpstream() as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _clean(fake: FakeGeminiUpstream) -> None:
    fake.reset()
    fake.api_key = API_KEY
    fake.access_tokens = set()


def gemini_client(fake: FakeGeminiUpstream, key: str = API_KEY) -> genai.Client:
    options = types.HttpOptions(base_url=fake.url, api_version="v1beta")
    return genai.Client(api_key=key, http_options=options)


def vertex_client(fake: FakeGeminiUpstream, account: ServiceAccount) -> genai.Client:
    creds = service_account.Credentials.from_service_account_info(
        account.info(fake.token_url), scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    options = types.HttpOptions(base_url=fake.url, api_version="v1")
    return genai.Client(
        vertexai=True,
        project="fake-project",
        location="us-central1",
        credentials=creds,
        http_options=options,
    )


def test_generate_content_echoes_and_reports_usage(fake: FakeGeminiUpstream) -> None:
    client = gemini_client(fake)
    answer = client.models.generate_content(
        model=MODEL,
        contents="hello there",
        config=types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=20),
    )
    assert answer.text == "echo: hello there"
    assert answer.candidates and answer.candidates[0].finish_reason == types.FinishReason.STOP
    assert answer.usage_metadata and answer.usage_metadata.prompt_token_count
    [seen] = fake.model_requests()
    assert seen.path == f"/v1beta/models/{MODEL}:generateContent"
    assert seen.headers["x-goog-api-key"] == API_KEY
    assert seen.json["systemInstruction"]["parts"] == [{"text": "be brief"}]
    assert seen.json["generationConfig"]["maxOutputTokens"] == 20


def test_stream_yields_chunks_then_finish_and_usage(fake: FakeGeminiUpstream) -> None:
    fake.script(
        GeminiReply(
            content="one two three four",
            usage={"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7},
        )
    )
    client = gemini_client(fake)
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="go"))
    assert len(chunks) == 3
    assert "".join(c.text or "" for c in chunks) == "one two three four"
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata and last.usage_metadata.total_token_count == 7
    [seen] = fake.model_requests()
    assert seen.path.endswith(":streamGenerateContent") and seen.query == "alt=sse"


def test_function_calling_round_trip(fake: FakeGeminiUpstream) -> None:
    weather = types.FunctionDeclaration(
        name="get_weather",
        description="Weather of a city",
        parameters=types.Schema(
            type=types.Type.OBJECT,
            properties={"city": types.Schema(type=types.Type.STRING)},
            required=["city"],
        ),
    )
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[weather])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    fake.script(
        GeminiReply(content="", function_calls=[{"name": "get_weather", "args": {"city": "Paris"}}])
    )
    client = gemini_client(fake)
    answer = client.models.generate_content(model=MODEL, contents="weather?", config=config)
    assert answer.function_calls and answer.function_calls[0].name == "get_weather"
    assert answer.function_calls[0].args == {"city": "Paris"}
    declared = fake.model_requests()[0].json["tools"][0]["functionDeclarations"][0]
    assert declared["name"] == "get_weather" and declared["parameters"]["type"] == "OBJECT"

    history = [
        types.Content(role="user", parts=[types.Part(text="weather?")]),
        answer.candidates[0].content,  # type: ignore[index]
        types.Content(
            role="user",
            parts=[
                types.Part.from_function_response(name="get_weather", response={"output": "sunny"})
            ],
        ),
    ]
    fake.script(GeminiReply(content="It is sunny."))
    final = client.models.generate_content(model=MODEL, contents=history, config=config)
    assert final.text == "It is sunny."
    sent = fake.model_requests()[1].json["contents"]
    assert sent[1]["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert sent[2]["parts"][0]["functionResponse"] == {
        "name": "get_weather",
        "response": {"output": "sunny"},
    }


def test_embed_content_single_and_batch(fake: FakeGeminiUpstream) -> None:
    client = gemini_client(fake)
    one = client.models.embed_content(
        model="gemini-embedding-001",
        contents="hi",
        config=types.EmbedContentConfig(output_dimensionality=4),
    )
    assert one.embeddings and len(one.embeddings[0].values or []) == 4
    many = client.models.embed_content(model="gemini-embedding-001", contents=["a", "b", "c"])
    assert many.embeddings and len(many.embeddings) == 3
    assert many.embeddings[0].values != many.embeddings[1].values
    paths = [r.path for r in fake.model_requests()]
    assert all(p == "/v1beta/models/gemini-embedding-001:batchEmbedContents" for p in paths)


def test_errors_reach_the_client_with_google_status(fake: FakeGeminiUpstream) -> None:
    fake.script(GeminiReply.error(429, "Resource has been exhausted", retry_after=7))
    client, wrong = gemini_client(fake), gemini_client(fake, key="wrong")
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=MODEL, contents="x")
    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    assert "exhausted" in (caught.value.message or "")
    with pytest.raises(errors.ClientError) as bad_key:
        wrong.models.generate_content(model=MODEL, contents="x")
    assert bad_key.value.code == 400 and "API key not valid" in (bad_key.value.message or "")
    fake.script(GeminiReply.error(503, "overloaded"))
    with pytest.raises(errors.ServerError):
        client.models.generate_content(model=MODEL, contents="x")


def test_vertex_with_service_account_token(fake: FakeGeminiUpstream) -> None:
    account = ServiceAccount.generate()
    fake.trust(account)
    client = vertex_client(fake, account)
    answer = client.models.generate_content(model=MODEL, contents="hello vertex")
    assert answer.text == "echo: hello vertex"
    [grant] = fake.grants
    assert grant.error is None and grant.issued is not None
    assert grant.claims["iss"] == account.email and grant.claims["aud"] == GOOGLE_TOKEN_AUDIENCE
    [seen] = fake.model_requests()
    assert seen.path == (
        f"/v1/projects/fake-project/locations/us-central1/publishers/google/models/{MODEL}"
        ":generateContent"
    )
    assert seen.headers["authorization"] == f"Bearer {grant.issued}"
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="stream it"))
    assert "".join(c.text or "" for c in chunks) == "echo: stream it"
    assert len(fake.grants) == 1  # the token is reused while valid


def test_vertex_rejects_an_assertion_signed_by_another_key(fake: FakeGeminiUpstream) -> None:
    trusted, impostor = ServiceAccount.generate(), ServiceAccount.generate()
    fake.trust(trusted)
    impostor.email = trusted.email  # same identity, wrong private key
    impostor.key_id = trusted.key_id
    client = vertex_client(fake, impostor)
    with pytest.raises(RefreshError, match="Invalid JWT Signature"):
        client.models.generate_content(model=MODEL, contents="x")
    assert fake.grants[-1].issued is None
    assert fake.model_requests() == []


def test_vertex_refuses_an_unknown_bearer(fake: FakeGeminiUpstream) -> None:
    fake.access_tokens = {"ya29.the-only-good-one"}
    status, _, body = _post(
        fake.url + f"/v1/projects/p/locations/r/publishers/google/models/{MODEL}:generateContent",
        {"contents": []},
        "ya29.guess",
    )
    assert status == 401 and b"UNAUTHENTICATED" in body
    status, _, body = _post(
        fake.url + f"/v1/projects/p/locations/r/publishers/google/models/{MODEL}:generateContent",
        {"contents": [{"role": "user", "parts": [{"text": "ok"}]}]},
        "ya29.the-only-good-one",
    )
    assert status == 200 and b"echo: ok" in body


def _post(url: str, body: object, token: str) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    import orjson

    request = urllib.request.Request(
        url,
        data=orjson.dumps(body),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()
