"""A fake AWS Bedrock runtime on a real socket: Converse, ConverseStream and InvokeModel.

Every request's SigV4 signature is recomputed with botocore from the known secret key and
compared (a bad or missing signature gets 403 `InvalidSignatureException`, as AWS answers).
Streams are AWS event-stream binary frames (prelude, headers, payload, CRC32s) encoded here;
`corrupt_frame` flips a byte of one frame's payload so its message CRC fails. Answers echo the
last user text (`echo: …`) unless `script` says otherwise; errors use AWS's JSON shape with
`x-amzn-ErrorType`. Proven against boto3's `bedrock-runtime` client in the self-test.
"""

from __future__ import annotations

import asyncio
import binascii
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fakes.aiohttp_fake import AiohttpFake

ACCESS_KEY = "AKIDFAKEBEDROCK0001"
SECRET_KEY = "fake-bedrock-secret-key-do-not-use"
REGION = "us-east-1"


@dataclass
class BedrockReply:
    status: int = 200
    error_type: str | None = None  # e.g. "ThrottlingException"
    message: str = "fake bedrock says no"
    content: str | None = None
    tool_use: dict[str, Any] | None = None  # {"toolUseId", "name", "input"}
    stop_reason: str | None = None
    usage: dict[str, int] | None = None
    corrupt_frame: int | None = None  # stream: index of the frame whose payload is damaged
    stream_exception: str | None = None  # stream: an exception frame after the first delta
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]
    json: Any
    signature_ok: bool


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (string headers only)."""
    raw = b""
    for name, value in headers.items():
        encoded = value.encode()
        raw += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(encoded))
        raw += encoded
    total = 12 + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + raw + payload
    return body + struct.pack(">I", binascii.crc32(body) & 0xFFFFFFFF)


def event(kind: str, data: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, orjson.dumps(data))


class FakeBedrock(AiohttpFake):
    """Bedrock runtime: Converse, ConverseStream and InvokeModel, each checking SigV4."""

    name = "fake-bedrock"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[SeenRequest] = []
        self._script: deque[BedrockReply] = deque()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/model/{model}/{action}", self._handle)

    def script(self, *replies: BedrockReply) -> None:
        self._script.extend(replies)

    # -- signature ---------------------------------------------------------------------------

    @staticmethod
    def _signature_ok(request: web.Request, body: bytes) -> bool:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return False
        fields = dict(
            part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 ") :].split(",")
        )
        signed_names = fields.get("SignedHeaders", "").split(";")
        scope = fields.get("Credential", "").split("/")
        if len(scope) != 5 or scope[0] != ACCESS_KEY or scope[2] != REGION or scope[3] != "bedrock":
            return False
        headers = {name: request.headers[name] for name in signed_names if name in request.headers}
        url = f"http://{request.headers['Host']}{request.raw_path}"
        aws = AWSRequest(method=request.method, url=url, data=body, headers=headers)
        aws.context["timestamp"] = request.headers.get("X-Amz-Date", "")
        token = request.headers.get("X-Amz-Security-Token")
        signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, token), "bedrock", REGION)
        canonical = signer.canonical_request(aws)
        expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
        return bool(expected == fields.get("Signature"))

    # -- handlers ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        ok = self._signature_ok(request, body)
        parsed = orjson.loads(body) if body else None
        self.requests.append(
            SeenRequest(
                request.path, {k.lower(): v for k, v in request.headers.items()}, parsed, ok
            )
        )
        if not ok:
            return _error(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match",
            )
        reply = self._script.popleft() if self._script else BedrockReply()
        if reply.error_type is not None or reply.status != 200:
            return _error(
                reply.status,
                reply.error_type or "InternalServerException",
                reply.message,
                reply.headers,
            )
        action = request.match_info["action"]
        model = unquote(request.match_info["model"])
        if action == "invoke":
            return _json(_embedding(model, parsed))
        text = reply.content if reply.content is not None else "echo: " + _last_user_text(parsed)
        usage = reply.usage or {"inputTokens": 5, "outputTokens": 3, "totalTokens": 8}
        if action == "converse":
            content: list[dict[str, Any]] = [{"text": text}] if text else []
            if reply.tool_use is not None:
                content.append({"toolUse": reply.tool_use})
            stop = reply.stop_reason or ("tool_use" if reply.tool_use else "end_turn")
            return _json(
                {
                    "output": {"message": {"role": "assistant", "content": content}},
                    "stopReason": stop,
                    "usage": usage,
                    "metrics": {"latencyMs": 12},
                }
            )
        return await self._stream(request, reply, text, usage)

    async def _stream(
        self, request: web.Request, reply: BedrockReply, text: str, usage: dict[str, int]
    ) -> web.StreamResponse:
        frames = [event("messageStart", {"role": "assistant"})]
        for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
            if piece:
                frames.append(
                    event("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0})
                )
        if reply.stream_exception is not None:
            headers = {
                ":exception-type": reply.stream_exception,
                ":content-type": "application/json",
                ":message-type": "exception",
            }
            frames.insert(2, frame(headers, orjson.dumps({"message": "model stream failed"})))
        frames.append(event("contentBlockStop", {"contentBlockIndex": 0}))
        if reply.tool_use is not None:
            use = reply.tool_use
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            frames.append(event("contentBlockStart", {"start": start, "contentBlockIndex": 1}))
            delta = {"toolUse": {"input": orjson.dumps(use["input"]).decode()}}
            frames.append(event("contentBlockDelta", {"delta": delta, "contentBlockIndex": 1}))
            frames.append(event("contentBlockStop", {"contentBlockIndex": 1}))
        stop = reply.stop_reason or ("tool_use" if reply.tool_use else "end_turn")
        frames.append(event("messageStop", {"stopReason": stop}))
        frames.append(event("metadata", {"usage": usage, "metrics": {"latencyMs": 12}}))
        if reply.corrupt_frame is not None:
            damaged = bytearray(frames[reply.corrupt_frame])
            damaged[-6] ^= 0xFF
            frames[reply.corrupt_frame] = bytes(damaged)
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/vnd.amazon.eventstream"}
        )
        await response.prepare(request)
        for item in frames:
            await response.write(item)
            await asyncio.sleep(0.001)
        await response.write_eof()
        return response


def _last_user_text(body: Any) -> str:
    for message in reversed((body or {}).get("messages") or []):
        if message.get("role") == "user":
            texts = [b["text"] for b in message.get("content", []) if "text" in b]
            if texts:
                return "".join(texts)
    return ""


def _embedding(model: str, body: Any) -> dict[str, Any]:
    if model.startswith("cohere."):
        texts = body.get("texts") or []
        return {
            "id": "e1",
            "embeddings": [[0.1 * (i + 1)] * 4 for i in range(len(texts))],
            "texts": texts,
        }
    dims = body.get("dimensions", 4)
    return {
        "embedding": [0.5] * dims,
        "inputTextTokenCount": len(body.get("inputText", "")) // 4 + 1,
    }


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _error(
    status: int, kind: str, message: str, extra: dict[str, str] | None = None
) -> web.Response:
    headers = {
        "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        **(extra or {}),
    }
    return web.Response(
        status=status,
        body=orjson.dumps({"message": message}),
        content_type="application/json",
        headers=headers,
    )


_ = time
