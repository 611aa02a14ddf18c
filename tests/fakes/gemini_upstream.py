"""Scriptable fake Gemini API, Vertex AI and Google OAuth token endpoint, on a real socket.

`FakeGeminiUpstream` runs an aiohttp server in a background thread and speaks the wire the
official `google-genai` client speaks: `POST /v1beta/models/{m}:generateContent`,
`:streamGenerateContent?alt=sse` (each SSE event one `GenerateContentResponse`, no end marker),
`:embedContent`, `:batchEmbedContents`, the same under Vertex's
`/v1[beta1]/projects/{p}/locations/{r}/publishers/google/models/{m}:…` (plus `:predict`), and
`POST /token`, an OAuth2 JWT-bearer grant that verifies the assertion's RS256 signature with a
service account's public key (`trust`). Google's error envelope is
`{"error": {"code", "message", "status"}}`. Every request is recorded; each takes the next
scripted `GeminiReply` (status, Retry-After, delays, parts, function calls, finish reason,
usage, raw SSE frames, stream cuts), else a good answer echoing the last user text.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from fakes.aiohttp_fake import AiohttpFake
from fakes.openai_upstream import RecordedRequest, _drop, _pause

JsonObject = dict[str, Any]
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: the audience Google's token endpoint requires of an assertion (google-auth always sends it)
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def google_error(status: int, message: str = "upstream says no", **extra: Any) -> JsonObject:
    error: JsonObject = {
        "code": status,
        "message": message,
        "status": _STATUS.get(status, "UNKNOWN"),
    }
    error.update(extra)
    return {"error": error}


@dataclass
class GeminiReply:
    """How to answer one model request. The default is a good answer."""

    status: int = 200
    json: Any = None  # body sent as JSON instead of the built answer (e.g. an error envelope)
    raw_body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: int | str | None = None
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    cut_after_chunks: int | None = None  # stream: drop the connection after N events
    #: stream: before event `hold_before`, wait (≤ 10 s) until the test sets `hold`
    hold: threading.Event | None = None
    hold_before: int = 1
    drop_connection: bool = False
    sse_frames: list[str] | None = None  # stream body written verbatim, frame by frame
    content: str | None = None  # reply text instead of "echo: <last user text>"
    thought: str | None = None  # a `thought: true` part before the text
    function_calls: list[JsonObject] | None = None  # `functionCall` objects to answer with
    thought_signature: str | None = None  # on the first functionCall part
    finish_reason: str = "STOP"
    usage: JsonObject | None = None  # usageMetadata instead of the computed one
    omit_usage: bool = False
    chunks: int | None = None  # text chunks per stream (default: the fake's `chunks`)

    @classmethod
    def error(cls, status: int, message: str = "upstream says no", **kwargs: Any) -> GeminiReply:
        return cls(status=status, json=google_error(status, message), **kwargs)


@dataclass
class ServiceAccount:
    """A throwaway service account: its key file fields and the public key that checks it."""

    email: str
    key_id: str
    private_pem: str
    public_key: rsa.RSAPublicKey = field(repr=False)

    @classmethod
    def generate(
        cls, email: str = "aisix-tests@fake-project.iam.gserviceaccount.com"
    ) -> ServiceAccount:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return cls(email, hashlib.sha1(pem.encode()).hexdigest(), pem, key.public_key())

    def info(self, token_uri: str, project: str = "fake-project") -> JsonObject:
        """The JSON key file Google issues (the shape google-auth reads)."""
        return {
            "type": "service_account",
            "project_id": project,
            "private_key_id": self.key_id,
            "private_key": self.private_pem,
            "client_email": self.email,
            "client_id": "1234567890",
            "token_uri": token_uri,
        }


@dataclass
class TokenGrant:
    """One token request the fake OAuth endpoint answered (or refused)."""

    claims: JsonObject
    issued: str | None
    error: str | None


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeGeminiUpstream(AiohttpFake):
    """A Gemini / Vertex / OAuth upstream with per-request scripted behaviour."""

    name = "fake-gemini-upstream"

    def __init__(self, *, chunks: int = 3, host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self.chunks = chunks
        self.requests: list[RecordedRequest] = []
        #: the x-goog-api-key the Gemini routes accept (None: any)
        self.api_key: str | None = None
        #: bearer tokens the Vertex routes accept besides the minted ones (None: any bearer)
        self.access_tokens: set[str] | None = None
        self.token_lifetime_s = 3600
        self.grants: list[TokenGrant] = []
        self.default = GeminiReply()
        self._accounts: dict[str, ServiceAccount] = {}
        self._minted: set[str] = set()
        self._script: collections.deque[GeminiReply] = collections.deque()
        self._token_script: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()

    # -- control -------------------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def trust(self, account: ServiceAccount) -> None:
        """Accept JWT assertions signed by this service account."""
        self._accounts[account.email] = account

    def script(self, *replies: GeminiReply) -> None:
        with self._lock:
            self._script.extend(replies)

    def script_token_failures(self, *statuses: int) -> None:
        """The next token requests answer these statuses (after checking the assertion)."""
        with self._lock:
            self._token_script.extend(statuses)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._token_script.clear()
            self.requests.clear()
            self.grants.clear()
            self.default = GeminiReply()

    def model_requests(self) -> list[RecordedRequest]:
        return [r for r in list(self.requests) if r.path != "/token"]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while len(self.model_requests()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} model requests, got {len(self.requests)}")
            time.sleep(0.01)
        return self.model_requests()

    def _next_reply(self) -> GeminiReply:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                request.query_string,
                headers,
                body,
                parsed,
                time.time(),
            )
        )
        if request.path == "/token" and request.method == "POST":
            return self._token(body)
        route = _route(request.path)
        if route is None or request.method != "POST":
            return _json(google_error(404, f"fake: no route {request.path}"), 404)
        vertex, model, method = route
        refusal = self._check_auth(headers, vertex)
        if refusal is not None:
            return refusal
        reply = self._next_reply()
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        if reply.drop_connection:
            return _drop(request)
        extra = dict(reply.headers)
        if reply.retry_after is not None:
            extra["Retry-After"] = str(reply.retry_after)
        if reply.raw_body is not None:
            return web.Response(
                body=reply.raw_body,
                status=reply.status,
                headers=extra,
                content_type="application/json",
            )
        if reply.json is not None or reply.status != 200:
            payload = reply.json if reply.json is not None else google_error(reply.status)
            return _json(payload, reply.status, extra)
        if not isinstance(parsed, dict):
            return _json(google_error(400, "Invalid JSON payload received."), 400, extra)
        if method == "streamGenerateContent":
            if request.query.get("alt") != "sse":
                return _json(google_error(400, "fake: streams need alt=sse"), 400, extra)
            frames = reply.sse_frames
            if frames is None:
                frames = [
                    "data: " + orjson.dumps(c).decode() + "\r\n\r\n"
                    for c in self._stream_chunks(reply, parsed, model)
                ]
            return await self._stream(request, reply, extra, [f.encode() for f in frames])
        if method == "generateContent":
            return _json(self._answer(reply, parsed, model), 200, extra)
        if method in ("embedContent", "batchEmbedContents", "predict"):
            return _json(_embeddings(method, parsed), 200, extra)
        return _json(google_error(404, f"fake: no method {method}"), 404, extra)

    def _check_auth(self, headers: dict[str, str], vertex: bool) -> web.Response | None:
        if not vertex:
            key = headers.get("x-goog-api-key")
            if key is None or (self.api_key is not None and key != self.api_key):
                message = "API key not valid. Please pass a valid API key."
                return _json(google_error(400, message), 400)
            return None
        auth = headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        accepted = token is not None and (
            token in self._minted or self.access_tokens is None or token in self.access_tokens
        )
        if not accepted:
            message = "Request had invalid authentication credentials."
            return _json(google_error(401, message), 401)
        return None

    # -- OAuth ---------------------------------------------------------------------------------

    def _token(self, body: bytes) -> web.Response:
        form = dict(urllib.parse.parse_qsl(body.decode("ascii", "replace")))
        if form.get("grant_type") != JWT_GRANT:
            return self._token_error({}, "unsupported_grant_type")
        try:
            claims = self._verify(form.get("assertion", ""))
        except ValueError as err:
            return self._token_error({}, f"invalid_grant: {err}")
        with self._lock:
            failure = self._token_script.popleft() if self._token_script else None
        if failure is not None:
            self.grants.append(TokenGrant(claims, None, f"scripted {failure}"))
            error = "internal_failure" if failure >= 500 else "access_denied"
            return _json({"error": error, "error_description": f"scripted {failure}"}, failure)
        token = f"ya29.fake-{len(self.grants)}-{hashlib.sha256(body).hexdigest()[:12]}"
        self._minted.add(token)
        self.grants.append(TokenGrant(claims, token, None))
        answer = {
            "access_token": token,
            "expires_in": self.token_lifetime_s,
            "token_type": "Bearer",
        }
        return _json(answer, 200)

    def _token_error(self, claims: JsonObject, error: str) -> web.Response:
        self.grants.append(TokenGrant(claims, None, error))
        return _json({"error": error.split(":", 1)[0], "error_description": error}, 400)

    def _verify(self, assertion: str) -> JsonObject:
        """Check an RS256 JWT assertion the way Google does; returns its claims."""
        try:
            head_b64, claims_b64, sig_b64 = assertion.split(".")
            header, claims = orjson.loads(_b64url(head_b64)), orjson.loads(_b64url(claims_b64))
            signature = _b64url(sig_b64)
        except (ValueError, orjson.JSONDecodeError):
            raise ValueError("malformed assertion") from None
        if header.get("alg") != "RS256":
            raise ValueError("alg must be RS256")
        account = self._accounts.get(str(claims.get("iss")))
        if account is None:
            raise ValueError("unknown issuer")
        try:
            account.public_key.verify(
                signature, f"{head_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except Exception:
            raise ValueError("Invalid JWT Signature.") from None
        if header.get("kid") != account.key_id:
            raise ValueError("unknown key id")
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            raise ValueError("audience is not Google's token endpoint")
        if CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
            raise ValueError("scope lacks cloud-platform")
        now = time.time()
        if not (claims.get("iat", 0) - 300 <= now < claims.get("exp", 0)):
            raise ValueError("assertion expired or not yet valid")
        return dict(claims)

    # -- answers -------------------------------------------------------------------------------

    def _parts(self, reply: GeminiReply, body: JsonObject) -> list[JsonObject]:
        parts: list[JsonObject] = []
        if reply.thought is not None:
            parts.append({"text": reply.thought, "thought": True})
        text = reply.content if reply.content is not None else "echo: " + last_user_text(body)
        if text:
            parts.append({"text": text})
        for i, call in enumerate(reply.function_calls or ()):
            part: JsonObject = {"functionCall": call}
            if i == 0 and reply.thought_signature:
                part["thoughtSignature"] = reply.thought_signature
            parts.append(part)
        return parts

    def _usage(self, reply: GeminiReply, body: JsonObject, parts: list[JsonObject]) -> JsonObject:
        if reply.usage is not None:
            return reply.usage
        prompt = max(1, len(orjson.dumps(body.get("contents", []))) // 4)
        out = sum(len(str(p.get("text", ""))) for p in parts if not p.get("thought")) // 4 + 1
        return {
            "promptTokenCount": prompt,
            "candidatesTokenCount": out,
            "totalTokenCount": prompt + out,
        }

    def _answer(self, reply: GeminiReply, body: JsonObject, model: str) -> JsonObject:
        parts = self._parts(reply, body)
        candidate: JsonObject = {"content": {"role": "model", "parts": parts}, "index": 0}
        if reply.finish_reason:
            candidate["finishReason"] = reply.finish_reason
        answer: JsonObject = {
            "candidates": [candidate],
            "modelVersion": model,
            "responseId": "fake-" + hashlib.sha256(orjson.dumps(body)).hexdigest()[:16],
        }
        if not reply.omit_usage:
            answer["usageMetadata"] = self._usage(reply, body, parts)
        return answer

    def _stream_chunks(self, reply: GeminiReply, body: JsonObject, model: str) -> list[JsonObject]:
        whole = self._answer(reply, body, model)
        parts: list[JsonObject] = whole["candidates"][0]["content"]["parts"]
        texts = [p for p in parts if "text" in p and not p.get("thought")]
        others = [p for p in parts if p not in texts]
        pieces = _split(texts[0]["text"], reply.chunks or self.chunks) if texts else []
        chunks: list[JsonObject] = []
        base = {"modelVersion": model, "responseId": whole["responseId"]}
        leading = [p for p in others if p.get("thought")]
        trailing = [p for p in others if not p.get("thought")]
        for i, piece in enumerate(pieces or [""]):
            chunk_parts = (leading if i == 0 else []) + ([{"text": piece}] if piece else [])
            chunks.append(
                {
                    "candidates": [
                        {"content": {"role": "model", "parts": chunk_parts}, "index": 0}
                    ],
                    **base,
                }
            )
        last = chunks[-1]["candidates"][0]
        last["content"]["parts"].extend(trailing)
        if reply.finish_reason:
            last["finishReason"] = reply.finish_reason
        if "usageMetadata" in whole:
            chunks[-1]["usageMetadata"] = whole["usageMetadata"]
        return chunks

    async def _stream(
        self, request: web.Request, reply: GeminiReply, extra: dict[str, str], frames: list[bytes]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", **extra}
        )
        await response.prepare(request)
        try:
            for i, frame in enumerate(frames):
                if reply.cut_after_chunks is not None and i >= reply.cut_after_chunks:
                    break
                if i and reply.chunk_delay_s > 0:
                    await _pause(request, reply.chunk_delay_s)
                if reply.hold is not None and i == reply.hold_before:
                    await asyncio.get_running_loop().run_in_executor(None, reply.hold.wait, 10)
                await response.write(frame)
        except ConnectionResetError:
            raise asyncio.CancelledError from None
        if reply.cut_after_chunks is not None:
            return _drop(request, response)
        await response.write_eof()
        return response


def _route(path: str) -> tuple[bool, str, str] | None:
    """(vertex?, model, method) of a model path, or None."""
    head, sep, method = path.rpartition(":")
    if not sep:
        return None
    parts = head.strip("/").split("/")
    if len(parts) == 3 and parts[0] == "v1beta" and parts[1] == "models":
        return False, parts[2], method
    if (
        len(parts) == 8
        and parts[0] in ("v1", "v1beta1")
        and parts[1] == "projects"
        and parts[3] == "locations"
        and parts[5:7] == ["publishers", "google"]
    ):
        return True, parts[7], method
    if len(parts) == 9 and parts[0] in ("v1", "v1beta1") and parts[7] == "models":
        return True, parts[8], method
    return None


def last_user_text(body: JsonObject) -> str:
    for content in reversed(body.get("contents") or []):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            texts = [p["text"] for p in content.get("parts", []) if isinstance(p.get("text"), str)]
            if texts:
                return "".join(texts)
    return ""


def _split(text: str, n: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, n)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def vector(text: str, dims: int) -> list[float]:
    """A deterministic embedding of `text` (values in [-1, 1))."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(digest[i % len(digest)] / 128 - 1, 6) for i in range(dims)]


def _embeddings(method: str, body: JsonObject) -> JsonObject:
    if method == "predict":
        dims = (body.get("parameters") or {}).get("outputDimensionality", 8)
        return {
            "predictions": [
                {
                    "embeddings": {
                        "values": vector(i["content"], dims),
                        "statistics": {
                            "token_count": len(i["content"]) // 4 + 1,
                            "truncated": False,
                        },
                    }
                }
                for i in body.get("instances", [])
            ]
        }

    def one(item: JsonObject) -> JsonObject:
        text = "".join(p.get("text", "") for p in item["content"]["parts"])
        return {"values": vector(text, item.get("outputDimensionality", 8))}

    if method == "embedContent":
        return {"embedding": one(body)}
    return {"embeddings": [one(item) for item in body.get("requests", [])]}


def _json(body: Any, status: int = 200, extra: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=extra or {}, content_type="application/json"
    )
