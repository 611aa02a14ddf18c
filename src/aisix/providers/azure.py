"""The `azure-openai` adapter: Azure OpenAI deployments (contract §5.1, §7.1, §7.2).

Built once per snapshot: `api_base` normalised (a bare resource name becomes
`https://<name>.openai.azure.com`, anything from `/openai/` on is cut), the deployment URLs of
chat, completions and embeddings with `api-version`, and the credential: the resource key
(`api-key` header) or Entra ID client credentials minted into bearer tokens (through the `send`
the registry hands it; until it does, `direct_send`), cached by a shared `TokenSource`. The
wire is the OpenAI family's: OpenAI-inbound calls are relayed with the OpenAI adapter's body
rules, Anthropic-inbound calls are encoded by the OpenAI codec. Azure's error bodies
(`innererror`, API Management's `{"statusCode", "message"}`) and retry headers are read here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp
import orjson

from aisix.credentials import azure as azure_secret
from aisix.errors import GatewayError, UpstreamConnectionError, UpstreamTimeout
from aisix.providers.base import Endpoint, TLSConfig, UpstreamCall, UpstreamRequest
from aisix.providers.openai import USER_AGENT, OpenAIBody, call_headers, static_headers
from aisix.providers.tokens import Token, TokenSource, TokenUnavailable, shared_source
from aisix.resources import AzureSettings, DirectModel, ProviderKey
from aisix.wire.base import UpstreamCodec
from aisix.wire.openai import CODEC as OPENAI_CODEC
from aisix.wire.openai import StreamDecoder, load_chunk
from aisix.wire.types import StreamEvent, UpstreamFault

__all__ = ["CODEC", "AzureProvider", "build_provider", "normalise_base", "retry_after_of"]

#: the deployment API of each endpoint the adapter serves natively
_PATHS: dict[str, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    # Azure OpenAI deployments serve images and audio; it has no moderations or rerank API
    "images": "/images/generations",
    "audio_transcriptions": "/audio/transcriptions",
    "audio_translations": "/audio/translations",
    "audio_speech": "/audio/speech",
}
_NATIVE = frozenset(_PATHS)
#: Anthropic Messages and Responses API calls are translated to chat
_SUPPORTED = _NATIVE | {"messages", "responses"}
DEFAULT_TOKEN_TIMEOUT_S = 10.0


class SentResponse(Protocol):
    @property
    def status(self) -> int: ...

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
        host, sep, rest = base.partition("/")
        bare = "." not in host and ":" not in host
        base = f"https://{host}.openai.azure.com{sep}{rest}" if bare else f"https://{base}"
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


class AzureStreamDecoder(StreamDecoder):
    """OpenAI chunks, less the id-less `prompt_filter_results` chunk Azure opens with (it
    would otherwise give the stream an empty id and model)."""

    __slots__ = ()

    def _payload(self, payload: bytes, out: list[StreamEvent]) -> None:
        if not self._started and not self.done and payload != b"[DONE]":
            chunk = load_chunk(payload)
            if not chunk.get("id") and not chunk.get("choices") and not chunk.get("usage"):
                return
        super()._payload(payload, out)


#: the OpenAI family codec with Azure's error bodies and stream opening
CODEC = dataclasses.replace(
    OPENAI_CODEC, stream_decoder=AzureStreamDecoder, parse_error=parse_error
)


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
    codec: UpstreamCodec = CODEC
    __slots__ = (
        "_api_key",
        "_body",
        "_extra_headers",
        "_tokens",
        "base",
        "headers",
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
        self.model_name = model.model_name
        self.tls = tls
        if not (key.api_base or "").strip():  # e.g. an azure adapter implied by the model label
            raise ValueError("api_base: required with adapter azure-openai")
        self.base = normalise_base(key.api_base or "")
        version = (key.azure or AzureSettings()).api_version
        prefix = f"{self.base}/openai/deployments/{quote(model.model_name, safe='')}"
        query = "?api-version=" + quote(version, safe="")
        self.urls = {name: prefix + path + query for name, path in _PATHS.items()}
        self.headers, self._extra_headers = static_headers(key)
        # Azure routes by deployment and ignores `model`; it is still set to the deployment
        self._body = OpenAIBody(key, model.model_name)
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
        if endpoint in _NATIVE and call.body is None:
            raise ValueError(f"{endpoint}: a relayed call needs the client's body")
        if endpoint not in _NATIVE and call.canonical is None:
            raise ValueError(f"{endpoint}: a translated call needs a canonical request")
        upstream = endpoint if endpoint in _NATIVE else "chat"
        headers = call_headers(self.headers, self._extra_headers, call)
        body = self._body.shape(call, self.codec, upstream)
        return UpstreamRequest("POST", self.urls[upstream], headers, body, self.tls)

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


# --- token requests until the transport's `send` reaches providers ---------------------------


@dataclass(slots=True)
class _Answer:
    status: int
    data: bytes

    def body(self) -> bytes:
        return self.data


def _ssl_for(tls: TLSConfig) -> ssl.SSLContext | bool:
    if not tls.verify:
        return False
    if tls.ca_cert or tls.ca_file or tls.client_cert_file:
        context = ssl.create_default_context(cadata=tls.ca_cert, cafile=tls.ca_file)
        if tls.client_cert_file:
            context.load_cert_chain(tls.client_cert_file, tls.client_key_file)
        return context
    return True


async def direct_send(request: UpstreamRequest, *, stream: bool, timeout: float | None) -> _Answer:
    """One non-streamed request on a short-lived aiohttp session (no proxy from the
    environment): the token request's path while the registry hands providers no `send`.
    About one call per credential per hour, off the request path."""
    limit = aiohttp.ClientTimeout(total=timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=limit, trust_env=False) as session,
            session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.body,
                ssl=_ssl_for(request.tls),
                allow_redirects=False,
            ) as response,
        ):
            return _Answer(response.status, await response.read())
    except TimeoutError:
        raise UpstreamTimeout(f"token request timed out after {timeout}s") from None
    except (aiohttp.ClientError, OSError, ssl.SSLError) as err:
        raise UpstreamConnectionError(
            f"could not reach the token endpoint ({type(err).__name__})"
        ) from None


def build_provider(
    key: ProviderKey, model: DirectModel, tls: TLSConfig, send: Send | None = None
) -> AzureProvider:
    return AzureProvider(key, model, tls, send or direct_send)
