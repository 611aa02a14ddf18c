"""A fake OpenAI-compatible upstream for demos and load tests. It is NOT a provider.

`aisix demo-upstream` serves `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and
`/v1/models` with canned, deterministic answers: chat replies are `"echo: <last user message>"`,
every body names the `model` it received, `usage` is computed like the gateway's own estimate
(UTF-8 bytes / 4, rounded up) and embeddings are derived from a hash of each input. It never
calls a model and ignores credentials. The pure response builders here are reused by the
scriptable fake upstream in `tests/fakes`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import math
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from aiohttp import web

DEFAULT_EMBEDDING_DIMENSIONS = 16
DEMO_MODELS = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")

JsonObject = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Pure builders (no I/O)
# ---------------------------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """Token estimate used throughout aisix: UTF-8 bytes divided by 4, rounded up."""
    return math.ceil(len(text.encode("utf-8")) / 4)


def content_text(content: Any) -> str:
    """Text of a chat `content` value: a string, null, or an array of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    return ""


def messages_text(messages: Any) -> str:
    """All text in a chat `messages` array, concatenated (for the prompt token estimate)."""
    if not isinstance(messages, list):
        return ""
    return "".join(content_text(m.get("content")) for m in messages if isinstance(m, dict))


def last_user_text(messages: Any) -> str:
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return content_text(message.get("content"))
    return ""


def prompt_text(prompt: Any) -> str:
    """Text of a completions `prompt`: a string or a list of strings (token arrays count 0)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return "".join(p for p in prompt if isinstance(p, str))
    return ""


def usage_for(prompt_tokens: int, completion_tokens: int) -> JsonObject:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_reply_text(body: JsonObject) -> str:
    return "echo: " + last_user_text(body.get("messages"))


def chat_usage(body: JsonObject, reply: str) -> JsonObject:
    return usage_for(estimate_tokens(messages_text(body.get("messages"))), estimate_tokens(reply))


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def chat_completion(
    model: str, reply: str, usage: JsonObject | None, *, completion_id: str | None = None
) -> JsonObject:
    """A non-streaming `chat.completion` body."""
    out: JsonObject = {
        "id": completion_id or new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "system_fingerprint": "fp_aisix_demo",
    }
    if usage is not None:
        out["usage"] = usage
    return out


def split_text(text: str, pieces: int) -> list[str]:
    """Split `text` into at most `pieces` non-empty, order-preserving parts (at least one)."""
    pieces = max(1, min(pieces, len(text)))
    if not text:
        return [""]
    size = math.ceil(len(text) / pieces)
    return [text[i : i + size] for i in range(0, len(text), size)]


def chat_stream_chunks(
    model: str,
    reply: str,
    usage: JsonObject | None,
    *,
    chunks: int = 8,
    completion_id: str | None = None,
) -> list[JsonObject]:
    """The `chat.completion.chunk` objects of a stream, usage chunk last when `usage` is given.

    Shape follows OpenAI: a role chunk, content chunks, a chunk with `finish_reason`, then
    (only with `stream_options.include_usage`) a chunk with `choices: []` and `usage`.
    """
    cid = completion_id or new_id("chatcmpl-")
    created = int(time.time())

    def chunk(delta: JsonObject, finish: str | None) -> JsonObject:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_aisix_demo",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": ""}, None)]
    out.extend(chunk({"content": part}, None) for part in split_text(reply, chunks))
    out.append(chunk({}, "stop"))
    if usage is not None:
        out.append(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_aisix_demo",
                "choices": [],
                "usage": usage,
            }
        )
    return out


def completion_reply_text(body: JsonObject) -> str:
    return "echo: " + prompt_text(body.get("prompt"))


def completion_usage(body: JsonObject, reply: str) -> JsonObject:
    return usage_for(estimate_tokens(prompt_text(body.get("prompt"))), estimate_tokens(reply))


def text_completion(model: str, reply: str, usage: JsonObject | None) -> JsonObject:
    """A non-streaming legacy `text_completion` body."""
    out: JsonObject = {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"text": reply, "index": 0, "logprobs": None, "finish_reason": "stop"}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def text_completion_chunks(
    model: str, reply: str, usage: JsonObject | None, *, chunks: int = 8
) -> list[JsonObject]:
    """Streaming `text_completion` chunks; the last text chunk carries `finish_reason`."""
    cid = new_id("cmpl-")
    created = int(time.time())
    parts = split_text(reply, chunks)
    out: list[JsonObject] = []
    for i, part in enumerate(parts):
        finish = "stop" if i == len(parts) - 1 else None
        out.append(
            {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"text": part, "index": 0, "logprobs": None, "finish_reason": finish}],
            }
        )
    if usage is not None:
        out.append(
            {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
        )
    return out


def embedding_vector(item: str | list[int], dimensions: int) -> list[float]:
    """A deterministic vector for one input; values are exact in float32 (k / 128)."""
    seed = item if isinstance(item, str) else ",".join(str(t) for t in item)
    digest = b""
    counter = 0
    while len(digest) < dimensions:
        digest += hashlib.sha256(f"{counter}:{seed}".encode()).digest()
        counter += 1
    return [(b - 128) / 128.0 for b in digest[:dimensions]]


def embedding_inputs(raw: Any) -> list[str | list[int]] | None:
    """Normalise `input` (string, [string], [int], [[int]]) to a list of items; None if invalid."""
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        return None
    if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        return [list(raw)]
    items: list[str | list[int]] = []
    for x in raw:
        if isinstance(x, str):
            items.append(x)
        elif isinstance(x, list) and all(isinstance(t, int) for t in x):
            items.append(list(x))
        else:
            return None
    return items


def embeddings_response(
    model: str, items: list[str | list[int]], dimensions: int, encoding_format: str
) -> JsonObject:
    """An OpenAI embeddings list, one entry per input, order preserved."""
    data: list[JsonObject] = []
    tokens = 0
    for index, item in enumerate(items):
        vector = embedding_vector(item, dimensions)
        tokens += estimate_tokens(item) if isinstance(item, str) else len(item)
        encoded: Any = vector
        if encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def models_response(models: tuple[str, ...] = DEMO_MODELS) -> JsonObject:
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "aisix-demo"}
            for m in models
        ],
    }


def error_body(message: str, err_type: str = "invalid_request_error") -> JsonObject:
    return {"error": {"message": message, "type": err_type, "param": None, "code": None}}


def sse_event(payload: JsonObject | str) -> bytes:
    """One SSE `data:` event; a string payload (such as `[DONE]`) is sent verbatim."""
    data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


def wants_usage(body: JsonObject) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# ---------------------------------------------------------------------------------------------
# aiohttp application
# ---------------------------------------------------------------------------------------------


def json_response(body: JsonObject, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def read_json_object(request: web.Request) -> JsonObject | web.Response:
    """Parse the body as a JSON object, or return the 400 answer for it."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return json_response(error_body("request body is not valid JSON"), 400)
    if not isinstance(body, dict):
        return json_response(error_body("request body must be a JSON object"), 400)
    if not isinstance(body.get("model"), str):
        return json_response(error_body("you must provide a model parameter"), 400)
    return body


async def stream_events(
    request: web.Request, events: Iterator[JsonObject | str], chunk_delay_s: float
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for i, event in enumerate(events):
        if i and chunk_delay_s > 0:
            await asyncio.sleep(chunk_delay_s)
        await response.write(sse_event(event))
    await response.write_eof()
    return response


def build_app(*, delay_ms: int = 0, chunks: int = 8, chunk_delay_ms: int = 0) -> web.Application:
    """The demo upstream: `delay_ms` before each answer, `chunks` content pieces per stream."""
    delay_s = delay_ms / 1000
    chunk_delay_s = chunk_delay_ms / 1000

    async def pause() -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)

    async def generate(
        request: web.Request,
        reply_of: Callable[[JsonObject], str],
        usage_of: Callable[[JsonObject, str], JsonObject],
        chunks_of: Callable[..., list[JsonObject]],
        answer_of: Callable[[str, str, JsonObject], JsonObject],
    ) -> web.StreamResponse:
        """Chat and text completions alike: one answer, streamed or whole."""
        body = await read_json_object(request)
        if isinstance(body, web.Response):
            return body
        model = str(body["model"])
        reply = reply_of(body)
        usage = usage_of(body, reply)
        await pause()
        if body.get("stream") is True:
            events = chunks_of(model, reply, usage if wants_usage(body) else None, chunks=chunks)
            return await stream_events(request, iter([*events, "[DONE]"]), chunk_delay_s)
        return json_response(answer_of(model, reply, usage))

    async def chat(request: web.Request) -> web.StreamResponse:
        return await generate(
            request, chat_reply_text, chat_usage, chat_stream_chunks, chat_completion
        )

    async def completions(request: web.Request) -> web.StreamResponse:
        return await generate(
            request,
            completion_reply_text,
            completion_usage,
            text_completion_chunks,
            text_completion,
        )

    async def embeddings(request: web.Request) -> web.StreamResponse:
        body = await read_json_object(request)
        if isinstance(body, web.Response):
            return body
        items = embedding_inputs(body.get("input"))
        if items is None:
            return json_response(error_body("'input' must be a string or an array"), 400)
        dimensions = body.get("dimensions", DEFAULT_EMBEDDING_DIMENSIONS)
        if not isinstance(dimensions, int) or not 1 <= dimensions <= 4096:
            return json_response(error_body("'dimensions' must be an integer in 1..4096"), 400)
        encoding = "base64" if body.get("encoding_format") == "base64" else "float"
        await pause()
        return json_response(embeddings_response(str(body["model"]), items, dimensions, encoding))

    async def models(request: web.Request) -> web.StreamResponse:
        return json_response(models_response())

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    return app


def main(argv: list[str]) -> int:
    """`aisix demo-upstream`: run the demo upstream until interrupted."""
    parser = argparse.ArgumentParser(
        prog="aisix demo-upstream",
        description="Fake OpenAI-compatible upstream for demos and load tests (not a provider).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--delay-ms", type=int, default=0, help="wait before each answer")
    parser.add_argument("--chunks", type=int, default=8, help="content chunks per stream")
    parser.add_argument("--chunk-delay-ms", type=int, default=0, help="wait between chunks")
    args = parser.parse_args(argv)
    if args.delay_ms < 0 or args.chunk_delay_ms < 0 or args.chunks < 1:
        parser.error("--delay-ms and --chunk-delay-ms must be >= 0 and --chunks >= 1")
    app = build_app(delay_ms=args.delay_ms, chunks=args.chunks, chunk_delay_ms=args.chunk_delay_ms)
    print(f"aisix demo upstream (not a provider) on http://{args.host}:{args.port}/v1", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0
