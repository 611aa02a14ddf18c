"""The `azure-openai` adapter: Azure OpenAI deployments (contract §5.1, §7.1, §7.2).

Built once per snapshot: `api_base` normalised (a bare resource name becomes
`https://<name>.openai.azure.com`, anything from `/openai/` on is cut), the deployment URLs of
chat, completions and embeddings with `api-version`, and the credential: the resource key
(`api-key` header) or Entra ID client credentials minted into bearer tokens through the
gateway's own transport and cached by a shared `TokenSource`. The wire is the OpenAI family's:
OpenAI-inbound calls are relayed with the OpenAI adapter's body rules, Anthropic-inbound calls
are encoded by the OpenAI codec. Azure's error bodies (`innererror`, API Management's
`{"statusCode", "message"}`) and rate-limit headers are read here.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import orjson

from aisix import __version__
from aisix.credentials import azure as azure_secret
from aisix.errors import GatewayError
from aisix.providers.base import Endpoint, TLSConfig, UpstreamCall, UpstreamRequest
from aisix.providers.tokens import Token, TokenSource, TokenUnavailable, shared_source
from aisix.resources import AzureSettings, DirectModel, ProviderKey
from aisix.wire.base import StreamDecoder, UpstreamCodec
from aisix.wire.types import ChatRequest, ChatResponse, UpstreamFault, Usage

__all__ = ["AzureCodec", "AzureProvider", "normalise_base", "retry_after_of"]

USER_AGENT = f"aisix/{__version__}"
#: the deployment API of each endpoint the adapter serves natively
_PATHS: dict[str, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
_NATIVE = frozenset(_PATHS)
#: Anthropic Messages calls are translated to chat
_SUPPORTED = _NATIVE | {"messages"}
DEFAULT_TOKEN_TIMEOUT_S = 10.0


class SentResponse(Protocol):
    status: int

    def body(self) -> bytes: ...


class Send(Protocol):
    """The gateway's upstream transport (`AsyncTransport.send`), for token requests."""

    def __call__(
        self, request: UpstreamRequest, *, stream: bool, timeout: float | None
    ) -> Awaitable[SentResponse]: ...


def normalise_base(api_base: str) -> str:
    """The resource root: a bare name becomes `https://<name>.openai.azure.com`; a host without
    a scheme gains `https://`; whitespace, trailing `/` and anything from `/openai/` are cut."""
    base = api_base.strip().rstrip("/")
    if "://" not in base:
        host = base.split("/", 1)[0]
        base = f"https://{base}.openai.azure.com" if "." not in host else f"https://{base}"
    cut = base.find("/openai/")
    if cut >= 0:
        base = base[:cut]
    elif base.endswith("/openai"):
        base = base[: -len("/openai")]
    return base.rstrip("/")


# --- errors and rate-limit headers ----------------------------------------------------------


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _code(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return _text(value)


def parse_error(body: bytes) -> UpstreamFault:
    """Azure's error bodies: the OpenAI envelope with Azure's `innererror` (content filter:
    `code: content_filter`, `innererror.code: ResponsibleAIPolicyViolation` as the type), and
    API Management's `{"statusCode": 401, "message": ...}`; empty for anything else."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return UpstreamFault()
    if not isinstance(data, dict):
        return UpstreamFault()
    error = data.get("error")
    if isinstance(error, dict):
        kind = _text(error.get("type"))
        inner = error.get("innererror")
        if kind is None and isinstance(inner, dict):
            kind = _text(inner.get("code"))
        return UpstreamFault(
            message=_text(error.get("message")),
            code=_code(error.get("code")),
            param=_text(error.get("param")),
            type=kind,
        )
    if isinstance(error, str):
        return UpstreamFault(message=error or None)
    if "statusCode" in data:
        return UpstreamFault(message=_text(data.get("message")), code=_code(data["statusCode"]))
    return UpstreamFault()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def _duration_s(raw: str) -> float | None:
    """`12`, `1.5`, `6m0s`, `250ms`, `1h2m3s` → seconds; None if unreadable."""
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    total, pos = 0.0, 0
    for match in _DURATION.finditer(raw):
        if match.start() != pos:
            return None
        value, unit = float(match.group(1)), match.group(2)
        total += value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
        pos = match.end()
    return total if pos and pos == len(raw) else None


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """Seconds Azure asks a client to wait (lowercased header names): `retry-after-ms`, then
    `retry-after` (delta-seconds), then `x-ratelimit-reset-requests` / `-tokens`."""
    raw = headers.get("retry-after-ms")
    if raw:
        ms = _duration_s(raw)
        if ms is not None:
            return ms / 1000
    for name in ("retry-after", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        raw = headers.get(name)
        if raw:
            seconds = _duration_s(raw)
            if seconds is not None:
                return seconds
    return None


# --- codec -----------------------------------------------------------------------------------


def _openai_codec() -> UpstreamCodec:
    """The OpenAI family codec (`aisix.wire.openai.CODEC`), resolved on first translated use."""
    module = importlib.import_module("aisix.wire.openai")
    codec: UpstreamCodec = module.CODEC
    return codec


class AzureCodec:
    """The OpenAI family codec with Azure's error shapes."""

    family = "openai"

    def encode_request(self, request: ChatRequest, model_name: str) -> dict[str, Any]:
        return _openai_codec().encode_request(request, model_name)

    def decode_response(self, body: dict[str, Any]) -> ChatResponse:
        return _openai_codec().decode_response(body)

    def stream_decoder(self) -> StreamDecoder:
        return _openai_codec().stream_decoder()

    def parse_error(self, body: bytes) -> UpstreamFault:
        return parse_error(body)

    def usage_of(self, body: dict[str, Any]) -> Usage | None:
        return _openai_codec().usage_of(body)


CODEC = AzureCodec()


# --- Entra ID tokens -------------------------------------------------------------------------

_OAUTH_ERROR = re.compile(r"^[a-z_]{1,64}$")
_AADSTS = re.compile(r"\bAADSTS\d{1,10}\b")


class EntraTokens:
    """The client-credentials grant against a tenant's token endpoint, as a `TokenSource`
    fetch. The client secret is only in the form body it sends."""

    __slots__ = ("_clock", "_credential", "_send", "_timeout", "_tls")

    def __init__(
        self,
        credential: azure_secret.EntraCredential,
        send: Send,
        tls: TLSConfig,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._send = send
        self._tls = tls
        self._timeout = timeout_s or None
        self._clock = clock

    def request(self) -> UpstreamRequest:
        cred = self._credential
        form = {
            "grant_type": "client_credentials",
            "client_id": cred.client_id,
            "client_secret": cred.client_secret,
            "scope": azure_secret.SCOPE,
        }
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "identity",
        }
        return UpstreamRequest("POST", cred.token_url, headers, urlencode(form).encode(), self._tls)

    async def __call__(self) -> Token:
        sent_at = self._clock()
        try:
            response = await self._send(self.request(), stream=False, timeout=self._timeout)
            status, body = response.status, response.body()
        except GatewayError as err:
            raise TokenUnavailable(
                f"Entra ID token request failed: {err.message}", retryable=True
            ) from None
        except Exception as err:  # a transport fault outside the GatewayError tree
            raise TokenUnavailable(
                f"Entra ID token request failed ({type(err).__name__})", retryable=True
            ) from None
        if status != 200:
            raise _rejected(status, body)
        return _token_of(body, sent_at)


def _rejected(status: int, body: bytes) -> TokenUnavailable:
    """The endpoint's refusal, by OAuth error name and AADSTS code only (its description may
    quote the request)."""
    if status >= 500 or status == 429:
        return TokenUnavailable(f"Entra ID token endpoint returned {status}", retryable=True)
    detail = ""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, str) and _OAUTH_ERROR.match(error):
            detail = f" {error}"
        description = data.get("error_description")
        code = _AADSTS.search(description) if isinstance(description, str) else None
        if code:
            detail += f" {code.group(0)}"
    return TokenUnavailable(
        f"upstream rejected the provider credentials (Entra ID token endpoint: {status}{detail})"
    )


def _token_of(body: bytes, sent_at: float) -> Token:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise TokenUnavailable("Entra ID token endpoint returned a body that is not JSON")
    value = data.get("access_token")
    kind = data.get("token_type", "Bearer")
    lifetime = data.get("expires_in")
    if isinstance(lifetime, str) and lifetime.isdigit():  # some endpoints send a string
        lifetime = int(lifetime)
    if (
        not isinstance(value, str)
        or not value
        or not isinstance(kind, str)
        or kind.lower() != "bearer"
        or not isinstance(lifetime, int | float)
        or isinstance(lifetime, bool)
        or lifetime <= 0
    ):
        raise TokenUnavailable("Entra ID token endpoint returned no usable bearer token")
    # counted from when the request left: the token cannot outlive what the endpoint granted
    return Token(value, sent_at + float(lifetime))


def _token_source(
    credential: azure_secret.EntraCredential, send: Send, tls: TLSConfig, timeout_s: float
) -> TokenSource:
    digest = hashlib.sha256(credential.client_secret.encode()).hexdigest()
    key = (
        "azure-entra",
        credential.token_url,
        credential.client_id,
        digest,
        tls,
        send,
        timeout_s,
    )
    return shared_source(key, lambda: TokenSource(EntraTokens(credential, send, tls, timeout_s)))


# --- the provider ----------------------------------------------------------------------------


class AzureProvider:
    """One Azure OpenAI deployment (a single-target model on an `azure-openai` key)."""

    adapter = "azure-openai"
    family = "openai"
    __slots__ = (
        "_api_key",
        "_defaults",
        "_extra_headers",
        "_headers",
        "_renames",
        "_tokens",
        "base",
        "codec",
        "model_name",
        "tls",
        "urls",
    )

    def __init__(
        self,
        key: ProviderKey,
        model: DirectModel,
        tls: TLSConfig,
        send: Send,
        *,
        token_timeout_s: float = DEFAULT_TOKEN_TIMEOUT_S,
    ) -> None:
        self.codec: UpstreamCodec = CODEC
        self.model_name = model.model_name
        self.tls = tls
        self.base = normalise_base(key.api_base or "")
        version = (key.azure or AzureSettings()).api_version
        prefix = f"{self.base}/openai/deployments/{quote(model.model_name, safe='')}"
        query = "?api-version=" + quote(version, safe="")
        self.urls = {name: prefix + path + query for name, path in _PATHS.items()}
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            # no compressed answers: streams must flow chunk by chunk, and JSON is small
            "Accept-Encoding": "identity",
        }
        request = key.request
        self._extra_headers = dict(request.default_headers or {}) if request else {}
        self._renames = dict(request.param_renames or {}) if request else {}
        self._defaults = dict(request.default_body_fields or {}) if request else {}
        credential = azure_secret.parse(key.secret)
        self._api_key: str | None = None
        self._tokens: TokenSource | None = None
        if isinstance(credential, azure_secret.AzureKeyCredential):
            self._api_key = credential.key
        else:
            self._tokens = _token_source(credential, send, tls, token_timeout_s)

    def supports(self, endpoint: Endpoint) -> bool:
        return endpoint in _SUPPORTED

    def native(self, endpoint: Endpoint) -> bool:
        return endpoint in _NATIVE

    def build(self, call: UpstreamCall) -> UpstreamRequest:
        endpoint = call.endpoint
        if endpoint in _NATIVE:
            if call.body is None:
                raise ValueError(f"{endpoint}: a relayed call needs the client's body")
            body = dict(call.body)
            url = self.urls[endpoint]
        else:
            if call.canonical is None:
                raise ValueError(f"{endpoint}: a translated call needs a canonical request")
            body = self.codec.encode_request(call.canonical, self.model_name)
            url = self.urls["chat"]
        self._rewrite(body, call.stream and endpoint != "embeddings")
        headers = dict(self._headers)
        headers["x-aisix-request-id"] = call.request_id
        if call.stream:
            headers["Accept"] = "text/event-stream"
        if self._extra_headers:
            headers.update(self._extra_headers)
        return UpstreamRequest("POST", url, headers, orjson.dumps(body), self.tls)

    def _rewrite(self, body: dict[str, Any], stream: bool) -> None:
        """The OpenAI-family body rules (§7.1); Azure routes by deployment and ignores
        `model`, which is still set to the deployment name."""
        body["model"] = self.model_name
        for old, new in self._renames.items():
            if old in body:
                body[new] = body.pop(old)
        for name, value in self._defaults.items():
            body.setdefault(name, value)
        if stream:
            options = body.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            options["include_usage"] = True
            body["stream_options"] = options

    async def authorize(self, request: UpstreamRequest) -> UpstreamRequest:
        if self._tokens is None:
            assert self._api_key is not None
            request.headers["api-key"] = self._api_key
        else:
            request.headers["Authorization"] = "Bearer " + await self._tokens.get()
        return request

    @staticmethod
    def retry_after(headers: Mapping[str, str]) -> float | None:
        """Seconds Azure asked to wait before the next call (429 and 503 answers)."""
        return retry_after_of(headers)
