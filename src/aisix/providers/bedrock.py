"""The `bedrock` adapter: AWS Bedrock's Converse / ConverseStream and InvokeModel (§7.2).

Built once per snapshot from the secret (`aisix.credentials.bedrock`): the regional endpoint
`https://bedrock-runtime.{region}.amazonaws.com` (or the key's `api_base`), and the
credentials: static keys, or the standard AWS chain resolved by botocore in a worker thread
(environment, shared config, web identity / IRSA, instance metadata), cached and refreshed in
the background from 60 s before they expire, single-flight. `authorize` signs each request
with SigV4 (service `bedrock`) through botocore; a session token becomes
`x-amz-security-token`. Every client API is translated through the Converse codec.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import orjson

from aisix import __version__
from aisix.credentials.bedrock import BedrockCredential, parse
from aisix.errors import UpstreamAuthError
from aisix.providers.base import Endpoint, TLSConfig, UpstreamCall, UpstreamRequest
from aisix.resources import DirectModel, ProviderKey
from aisix.wire.base import UpstreamCodec
from aisix.wire.bedrock import CODEC, encode_embeddings

SERVICE = "bedrock"
_SERVED = frozenset({"chat", "messages", "responses", "embeddings"})
#: refresh chain credentials this long before they expire
REFRESH_MARGIN_S = 60.0


class _Credentials:
    """Frozen AWS credentials for signing; chain credentials refreshed off the request path."""

    def __init__(self, secret: BedrockCredential) -> None:
        from botocore.credentials import Credentials

        self._frozen: Any = None
        self._expires: float | None = None
        self._source: Any = None
        self._refresh: asyncio.Task[None] | None = None
        if secret.static:
            self._frozen = Credentials(
                secret.access_key_id, secret.secret_access_key, secret.session_token
            ).get_frozen_credentials()

    async def get(self) -> Any:
        if self._frozen is not None and (
            self._expires is None or time.time() < self._expires - REFRESH_MARGIN_S
        ):
            return self._frozen
        usable = (
            self._frozen is not None and self._expires is not None and time.time() < self._expires
        )
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._resolve())
        if usable:  # still valid: refresh in the background, sign with what we have
            return self._frozen
        await asyncio.shield(self._refresh)
        if self._frozen is None:
            raise UpstreamAuthError("no AWS credentials found for the bedrock provider key")
        return self._frozen

    async def _resolve(self) -> None:
        try:
            frozen, expires = await asyncio.to_thread(self._load)
        except Exception as exc:  # keep a still-valid one; never show secrets
            if self._frozen is None:
                raise UpstreamAuthError(
                    f"cannot resolve AWS credentials: {type(exc).__name__}"
                ) from None
            return
        if frozen is not None:
            self._frozen, self._expires = frozen, expires

    def _load(self) -> tuple[Any, float | None]:
        if self._source is None:
            import botocore.session

            self._source = botocore.session.get_session().get_credentials()
        if self._source is None:
            return None, None
        frozen = self._source.get_frozen_credentials()
        expiry = getattr(self._source, "_expiry_time", None)
        return frozen, expiry.timestamp() if expiry is not None else None


class BedrockProvider:
    adapter = "bedrock"
    family = "bedrock"
    codec: UpstreamCodec = CODEC

    def __init__(self, key: ProviderKey, model: DirectModel, tls: TLSConfig) -> None:
        secret = parse(key.secret)
        self.region = secret.region
        base = (key.api_base or "").strip().rstrip("/")
        self.base = base or f"https://bedrock-runtime.{secret.region}.amazonaws.com"
        self.model_name = model.model_name
        self.tls = tls
        model_path = f"{self.base}/model/{quote(model.model_name, safe='')}"
        self.urls = {
            "converse": model_path + "/converse",
            "stream": model_path + "/converse-stream",
            "invoke": model_path + "/invoke",
        }
        request = key.request
        self._extra_headers = dict(request.default_headers or {}) if request else {}
        self._credentials = _Credentials(secret)

    def supports(self, endpoint: Endpoint) -> bool:
        return endpoint in _SERVED

    def native(self, endpoint: Endpoint) -> bool:
        return False

    def build(self, call: UpstreamCall) -> UpstreamRequest:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"aisix/{__version__}",
            "Accept-Encoding": "identity",
            "x-aisix-request-id": call.request_id,
        }
        if call.embedding is not None:
            body = encode_embeddings(call.embedding, self.model_name)
            url = self.urls["invoke"]
            headers["Accept"] = "application/json"
        else:
            assert call.canonical is not None
            body = self.codec.encode_request(call.canonical, self.model_name)
            url = self.urls["stream" if call.stream else "converse"]
            headers["Accept"] = (
                "application/vnd.amazon.eventstream" if call.stream else "application/json"
            )
        headers.update(self._extra_headers)
        return UpstreamRequest("POST", url, headers, orjson.dumps(body), self.tls)

    async def authorize(self, request: UpstreamRequest) -> UpstreamRequest:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials = await self._credentials.get()
        await request.buffer_body()  # SigV4 signs the payload's hash
        signed = AWSRequest(
            method=request.method, url=request.url, data=request.body, headers=request.headers
        )
        SigV4Auth(credentials, SERVICE, self.region).add_auth(signed)
        request.headers = {name: str(value) for name, value in signed.headers.items()}
        return request


def build_provider(key: ProviderKey, model: DirectModel, tls: TLSConfig) -> BedrockProvider:
    return BedrockProvider(key, model, tls)
