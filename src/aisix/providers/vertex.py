"""The `vertex` adapter: Gemini models on Vertex AI (contract §5.1, §7.2, §7.3).

Same wire as `gemini` (the Vertex codec differs only in `:predict` embeddings for non-Gemini
models), under `{base}/v1/projects/{project}/locations/{region}/publishers/google/models/…`
with `base` defaulting to `https://{region}-aiplatform.googleapis.com`. The bearer token is
the secret's `access_token`, or minted with google-auth from its service account (JWT grant,
`cloud-platform` scope, `token_url` replacing the account's `token_uri`), or from Application
Default Credentials. google-auth is synchronous: refreshes run in a worker thread behind the
shared `TokenSource` (cached until 60 s before expiry, refreshed in the background, single
flight). Providers of one secret share one token source, also across snapshot rebuilds.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import weakref
from datetime import UTC, datetime
from typing import Any

from aisix.credentials import vertex as credentials
from aisix.credentials.vertex import SCOPE, VertexCredential
from aisix.errors import UpstreamAuthError
from aisix.providers.base import Endpoint, TLSConfig, UpstreamCall, UpstreamRequest
from aisix.providers.gemini import (
    ENDPOINTS,
    GoogleModelURLs,
    encode_call,
    model_path,
    request_headers,
)
from aisix.providers.openai import static_headers
from aisix.providers.tokens import Token, TokenSource, TokenUnavailable
from aisix.resources import DirectModel, ProviderKey
from aisix.wire.base import UpstreamCodec
from aisix.wire.gemini import VERTEX_CODEC

#: a token without an expiry from google-auth is treated as valid this long
_DEFAULT_LIFETIME_S = 3600.0
#: bound on one token request (google-auth's own default is 120 s): a hung identity endpoint
#: must not hold the refresh, and the requests waiting for it, for minutes
TOKEN_TIMEOUT_S = 10.0


class SharedTokens:
    """One secret's token source, shared by its providers (weakly indexed by secret digest:
    it lives while a provider of a live snapshot holds it)."""

    __slots__ = ("__weakref__", "source")

    def __init__(self, source: TokenSource) -> None:
        self.source = source


_SOURCES: weakref.WeakValueDictionary[str, SharedTokens] = weakref.WeakValueDictionary()


def default_base(region: str) -> str:
    if region == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{region}-aiplatform.googleapis.com"


class GoogleAuthMinter:
    """Mints tokens with google-auth in a worker thread (one credentials object, reused)."""

    __slots__ = ("_account", "_credentials", "_token_url")

    def __init__(self, credential: VertexCredential) -> None:
        self._account = credential.service_account
        self._token_url = credential.token_url
        self._credentials: Any = None

    def _load(self) -> Any:
        if self._account is not None:
            from google.oauth2 import service_account

            info = dict(self._account)
            if self._token_url:
                info["token_uri"] = self._token_url
            info.setdefault("token_uri", "https://oauth2.googleapis.com/token")
            return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[SCOPE]
            )
        import google.auth

        found, _project = google.auth.default(scopes=[SCOPE])
        return found

    def _refresh(self) -> Token:
        """Blocking: runs in a worker thread, never on the event loop."""
        import google.auth.exceptions
        from google.auth.transport.requests import Request

        class BoundedRequest(Request):
            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                kwargs["timeout"] = min(kwargs.get("timeout") or TOKEN_TIMEOUT_S, TOKEN_TIMEOUT_S)
                return super().__call__(*args, **kwargs)  # type: ignore[no-untyped-call]

        try:
            if self._credentials is None:
                self._credentials = self._load()
            creds = self._credentials
            creds.refresh(BoundedRequest())
        except google.auth.exceptions.TransportError:
            raise TokenUnavailable(
                "could not reach the Google token endpoint", retryable=True
            ) from None
        except google.auth.exceptions.DefaultCredentialsError:
            raise TokenUnavailable("no Application Default Credentials were found") from None
        except google.auth.exceptions.GoogleAuthError as err:
            # the library's text may quote the token endpoint's answer: only the kind is shown
            raise TokenUnavailable(
                f"the Google token endpoint refused the credentials ({type(err).__name__})"
            ) from None
        expiry = creds.expiry
        if isinstance(expiry, datetime):
            expires_at = expiry.replace(tzinfo=expiry.tzinfo or UTC).timestamp()
        else:
            expires_at = time.time() + _DEFAULT_LIFETIME_S
        return Token(str(creds.token or ""), expires_at)

    async def fetch(self) -> Token:
        return await asyncio.to_thread(self._refresh)


def token_source(secret: str, credential: VertexCredential) -> SharedTokens:
    """The shared token source of a minted-token secret."""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    shared = _SOURCES.get(digest)
    if shared is None:
        shared = SharedTokens(TokenSource(GoogleAuthMinter(credential).fetch))
        _SOURCES[digest] = shared
    return shared


class VertexProvider:
    adapter = "vertex"
    family = "gemini"
    codec: UpstreamCodec = VERTEX_CODEC
    __slots__ = (
        "_bearer",
        "_extra_headers",
        "_fault",
        "_tokens",
        "base",
        "headers",
        "model_name",
        "tls",
        "urls",
    )

    def __init__(self, key: ProviderKey, model: DirectModel, tls: TLSConfig) -> None:
        self.model_name = model.model_name
        self.tls = tls
        self.headers, self._extra_headers = static_headers(key)
        self._bearer: str | None = None
        self._tokens: SharedTokens | None = None
        self._fault: str | None = None
        try:
            credential = credentials.parse(key.secret)
        except ValueError as err:
            self._fault = str(err)
            credential = VertexCredential("invalid", "invalid")
        if credential.access_token is not None:
            self._bearer = f"Bearer {credential.access_token}"
        elif self._fault is None:
            self._tokens = token_source(key.secret, credential)
        api_base = (key.api_base or "").strip().rstrip("/")
        self.base = api_base or default_base(credential.region)
        self.urls = GoogleModelURLs(
            f"{self.base}/v1/projects/{credential.project}/locations/{credential.region}"
            f"/publishers/google/models/{model_path(model.model_name)}"
        )

    def supports(self, endpoint: Endpoint) -> bool:
        return endpoint in ENDPOINTS

    def native(self, endpoint: Endpoint) -> bool:
        return False

    def build(self, call: UpstreamCall) -> UpstreamRequest:
        url, body = encode_call(call, VERTEX_CODEC, self.model_name, self.urls)
        headers = request_headers(self.headers, self._extra_headers, call)
        return UpstreamRequest("POST", url, headers, body, self.tls)

    async def authorize(self, request: UpstreamRequest) -> UpstreamRequest:
        if self._bearer is not None:
            request.headers["Authorization"] = self._bearer
        elif self._tokens is not None:
            request.headers["Authorization"] = "Bearer " + await self._tokens.source.get()
        else:
            raise UpstreamAuthError(f"the provider key's secret is unusable: {self._fault}")
        return request


def build_provider(key: ProviderKey, model: DirectModel, tls: TLSConfig) -> VertexProvider:
    return VertexProvider(key, model, tls)


__all__ = ["GoogleAuthMinter", "VertexProvider", "build_provider", "default_base", "token_source"]
