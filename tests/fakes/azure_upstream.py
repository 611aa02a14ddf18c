"""Fake Azure OpenAI resource and fake Entra ID token endpoint, each on a real socket.

`FakeAzureOpenAI` speaks the deployment API (`/openai/deployments/{name}/chat/completions`,
`/completions`, `/embeddings`, `?api-version=` required): it checks the `api-key` header or an
`Authorization: Bearer` token issued (and not yet expired) by its `FakeEntraID`, answers with
Azure's envelope (`prompt_filter_results`, per-choice `content_filter_results`, the id-less
first stream chunk, the deployment's underlying model name) and Azure's error bodies (401, 404
`DeploymentNotFound`, the prompt filter's 400 `content_filter`, 429 with `retry-after`). It
keeps every knob of `FakeOpenAIUpstream` (`script(Reply(...))`: status, delay, scripted frames,
mid-stream cut, headers seen). `FakeEntraID` implements the v2.0 client-credentials grant,
checks the form, counts token requests and issues tokens with a settable lifetime; it also
serves the tenant's OIDC discovery document, so MSAL itself can run against it (over TLS).
"""

from __future__ import annotations

import copy
import re
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from fakes.openai_upstream import _BUILDERS, FakeOpenAIUpstream, RecordedRequest, Reply

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "azure"
SCOPE = "https://cognitiveservices.azure.com/.default"
DEFAULT_MODEL = "gpt-4o-2024-08-06"
API_VERSIONS = frozenset({"2024-06-01", "2024-10-21", "2025-01-01-preview", "2025-04-01-preview"})
_OPERATION = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)$")
_TOKEN_PATH = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
_DISCOVERY_PATH = re.compile(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$")


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


_CHAT = fixture("chat_completion.json")
CHOICE_FILTERS: dict[str, Any] = _CHAT["choices"][0]["content_filter_results"]
PROMPT_FILTERS: list[Any] = _CHAT["prompt_filter_results"]
VIOLENCE_FILTERED = {**CHOICE_FILTERS, "violence": {"filtered": True, "severity": "medium"}}


@dataclass
class AzureReply(Reply):
    """A `Reply` with Azure's output filter: the answer stops with `content_filter`."""

    content_filter: bool = False


def prompt_filtered() -> Reply:
    """The prompt filter's refusal: 400 `content_filter` with `innererror`."""
    return Reply(status=400, json=fixture("error_content_filter.json"))


def rate_limited(seconds: int = 6) -> Reply:
    """Azure's 429: `retry-after`, `retry-after-ms` and `x-ratelimit-reset-requests`."""
    return Reply(
        status=429,
        json=fixture("error_429.json"),
        retry_after=seconds,
        headers={
            "retry-after-ms": str(seconds * 1000),
            "x-ratelimit-reset-requests": f"{seconds}s",
            "x-ratelimit-remaining-requests": "0",
        },
    )


def _error(status: int, name: str) -> web.Response:
    return web.Response(
        body=(FIXTURES / name).read_bytes(), status=status, content_type="application/json"
    )


def _azure_error(status: int, code: str, message: str) -> web.Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(body=body, status=status, content_type="application/json")


class FakeEntraID(FakeOpenAIUpstream):
    """`POST /{tenant}/oauth2/v2.0/token` (client-credentials grant), form checked.

    `clients` maps client_id → client_secret; a tenant in `tenants` (empty: any) is required.
    `token_requests` counts grants asked for (also refused ones); `issued` maps each token to
    its expiry (wall clock). `script(Reply(...))` still overrides single answers.
    """

    def __init__(
        self, clients: dict[str, str], *, lifetime_s: int = 3599, tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(tls=tls)
        self.clients = dict(clients)
        self.tenants: set[str] = set()
        self.lifetime_s = lifetime_s
        self.token_requests = 0
        self.issued: dict[str, float] = {}
        self._issue_lock = threading.Lock()

    def token_url(self, tenant: str) -> str:
        return f"{self.url}/{tenant}/oauth2/v2.0/token"

    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        """The tenant's OIDC discovery document (what MSAL reads before a grant)."""
        root = f"{self.url}/{tenant}"
        return {
            "issuer": f"{root}/v2.0",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
        }

    def valid(self, token: str) -> bool:
        with self._issue_lock:
            expiry = self.issued.get(token)
        return expiry is not None and time.time() < expiry

    def issued_tokens(self) -> list[str]:
        with self._issue_lock:
            return list(self.issued)

    def issue(self) -> str:
        """A token as if granted now (for clients that bring their own)."""
        token = "eyJ0eXAiOiJKV1QifQ." + secrets.token_urlsafe(24)
        with self._issue_lock:
            self.issued[token] = time.time() + self.lifetime_s
        return token

    async def _good_answer(
        self, request: web.Request, reply: Reply, extra: dict[str, str], body: Any
    ) -> web.StreamResponse:
        discovery = _DISCOVERY_PATH.match(request.path)
        if request.method == "GET" and discovery is not None:
            return web.Response(
                body=orjson.dumps(self.openid_configuration(discovery.group(1))),
                content_type="application/json",
            )
        self.token_requests += 1
        match = _TOKEN_PATH.match(request.path)
        if request.method != "POST" or match is None:
            return _oauth_error(404, "invalid_request", "AADSTS90002: Tenant not found.")
        if self.tenants and match.group(1) not in self.tenants:
            return _oauth_error(400, "invalid_request", "AADSTS90002: Tenant not found.")
        if not request.content_type.startswith("application/x-www-form-urlencoded"):
            return _oauth_error(
                400, "invalid_request", "AADSTS900144: The request body must contain ... form."
            )
        form = {k: v[0] for k, v in parse_qs((await request.read()).decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "AADSTS70003: grant_type.")
        client = form.get("client_id", "")
        if client not in self.clients:
            return _oauth_error(400, "unauthorized_client", "AADSTS700016: Application not found.")
        if form.get("client_secret") != self.clients[client]:
            return _oauth_error(
                401, "invalid_client", "AADSTS7000215: Invalid client secret provided."
            )
        if form.get("scope") != SCOPE:
            return _oauth_error(400, "invalid_scope", "AADSTS70011: The provided scope is invalid.")
        answer = fixture("entra_token.json")
        answer["access_token"] = self.issue()
        answer["expires_in"] = answer["ext_expires_in"] = self.lifetime_s
        return web.Response(body=orjson.dumps(answer), content_type="application/json")


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    body = fixture("entra_error_invalid_client.json")
    body.update(error=error, error_description=description, error_codes=[0])
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class FakeAzureOpenAI(FakeOpenAIUpstream):
    """An Azure OpenAI resource; see the module docstring."""

    def __init__(
        self,
        *,
        api_key: str = "fake-azure-resource-key",
        entra: FakeEntraID | None = None,
        deployments: dict[str, str] | None = None,
        chunks: int = 4,
    ) -> None:
        super().__init__(chunks=chunks)
        self.api_key = api_key
        self.entra = entra
        #: deployment name → underlying model; None: every deployment exists
        self.deployments = deployments
        self.api_versions = set(API_VERSIONS)

    def deployment_requests(self) -> list[RecordedRequest]:
        return [r for r in self.model_requests() if _OPERATION.match(r.path)]

    async def _good_answer(
        self, request: web.Request, reply: Reply, extra: dict[str, str], body: Any
    ) -> web.StreamResponse:
        match = _OPERATION.match(request.path)
        if request.method != "POST" or match is None:
            return _azure_error(404, "404", "Resource not found")
        version = request.query.get("api-version")
        if version is None:
            return _error(404, "error_no_api_version.json")
        if version not in self.api_versions:
            return _azure_error(400, "BadRequest", "API version not supported")
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        deployment, operation = match.group(1), match.group(2)
        if self.deployments is not None and deployment not in self.deployments:
            return _error(404, "error_deployment_not_found.json")
        model = (self.deployments or {}).get(deployment, DEFAULT_MODEL)
        if not isinstance(body, dict):
            return _azure_error(400, "BadRequest", "The request body is not valid JSON.")
        stream = body.get("stream") is True
        built = _BUILDERS["/v1/" + operation](self, reply, body, model, stream)
        filtered = isinstance(reply, AzureReply) and reply.content_filter
        if isinstance(built, dict):
            answer = _azure_answer(built, model, operation, filtered)
            return web.Response(
                body=orjson.dumps(answer), headers=extra, content_type="application/json"
            )
        frames = [b"data: " + orjson.dumps(c) + b"\n\n" for c in _azure_chunks(built, filtered)]
        if not reply.omit_done:
            frames.append(b"data: [DONE]\n\n")
        return await self._stream(request, reply, extra, frames)

    def _authenticate(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("api-key")
        authorization = request.headers.get("Authorization", "")
        if key is not None:
            return None if key == self.api_key else _error(401, "error_401_key.json")
        if authorization.startswith("Bearer "):
            token = authorization[len("Bearer ") :]
            if self.entra is not None and self.entra.valid(token):
                return None
            return _error(401, "error_401_token.json")
        return _azure_error(
            401,
            "401",
            "Access denied due to missing subscription key. Make sure to include subscription "
            "key when making requests to an API.",
        )


def _azure_answer(
    built: dict[str, Any], model: str, operation: str, filtered: bool
) -> dict[str, Any]:
    answer = copy.deepcopy(built)
    answer["model"] = model
    if operation == "embeddings":
        return answer
    answer["prompt_filter_results"] = PROMPT_FILTERS
    for choice in answer["choices"]:
        choice["content_filter_results"] = CHOICE_FILTERS
        if filtered:
            choice["content_filter_results"] = VIOLENCE_FILTERED
            choice["finish_reason"] = "content_filter"
            if "message" in choice:
                choice["message"] = {"role": "assistant"}
            else:
                choice["text"] = ""
    return answer


def _azure_chunks(built: list[dict[str, Any]], filtered: bool) -> list[dict[str, Any]]:
    """Azure's stream: an id-less `prompt_filter_results` chunk first, filter results on every
    choice; with the output filter, the content stops halfway with `content_filter`."""
    head = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
    out: list[dict[str, Any]] = [{**head, "prompt_filter_results": PROMPT_FILTERS}]
    content = [c for c in built if c["choices"] and c["choices"][0].get("finish_reason") is None]
    finish = [c for c in built if c["choices"] and c["choices"][0].get("finish_reason")]
    usage = [c for c in built if not c["choices"]]
    if filtered:
        content = content[: max(1, len(content) // 2)]
        last = copy.deepcopy(finish[0])
        last["choices"][0].update(
            finish_reason="content_filter", content_filter_results=VIOLENCE_FILTERED
        )
        finish = [last]
    for chunk in content + finish:
        chunk = copy.deepcopy(chunk)
        for choice in chunk["choices"]:
            choice.setdefault("content_filter_results", CHOICE_FILTERS)
        out.append(chunk)
    out.extend(usage)
    return out


@dataclass
class EntraSetup:
    """What a test needs to point a provider key at the fake Entra ID."""

    tenant: str = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    client_id: str = "aisix-test-client"
    client_secret: str = field(default_factory=lambda: "cs~" + secrets.token_urlsafe(18))

    def secret(self, entra: FakeEntraID | None = None, *, token_url: str | None = None) -> str:
        """The provider-key secret (contract §5.1) with `token_url` at the fake (or given)."""
        url = token_url or (entra.token_url(self.tenant) if entra is not None else None)
        assert url is not None, "give the fake Entra ID or a token_url"
        return orjson.dumps(
            {
                "tenant_id": self.tenant,
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "token_url": url,
            }
        ).decode()
