"""Fixed OpenAI wire bodies served by the benchmark upstreams.

One place for the chat.completion JSON that nginx returns, the SSE body of the fixed stream,
the chunk events the paced upstream emits, and the request bodies the load generators send.
Every body is deterministic so each target relays exactly the same bytes.
"""

from __future__ import annotations

import json

UPSTREAM_MODEL = "gpt-4o"
PROMPT = "Say hello in five words."

COMPLETION: dict[str, object] = {
    "id": "chatcmpl-bench0001",
    "object": "chat.completion",
    "created": 1700000000,
    "model": UPSTREAM_MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there, how are you?"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21},
}


def completion_json() -> str:
    """The non-streaming answer, compact JSON."""
    return json.dumps(COMPLETION, separators=(",", ":"))


def chunk_event(index: int, content: str, *, finish: bool = False) -> bytes:
    """One `data: {chat.completion.chunk}` SSE event."""
    delta: dict[str, str] = {"content": content}
    if index == 0:
        delta["role"] = "assistant"
    chunk = {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": UPSTREAM_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if finish else None}],
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def usage_event(completion_tokens: int) -> bytes:
    """The final usage chunk (as with stream_options.include_usage) and the [DONE] marker."""
    chunk = {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": UPSTREAM_MODEL,
        "choices": [],
        "usage": {
            "prompt_tokens": 14,
            "completion_tokens": completion_tokens,
            "total_tokens": 14 + completion_tokens,
        },
    }
    body = json.dumps(chunk, separators=(",", ":")).encode()
    return b"data: " + body + b"\n\ndata: [DONE]\n\n"


def sse_body(chunks: int = 8) -> bytes:
    """The whole fixed stream: `chunks` content events, a usage event and [DONE]."""
    parts = [chunk_event(i, f"tok{i} ", finish=i == chunks - 1) for i in range(chunks)]
    parts.append(usage_event(chunks))
    return b"".join(parts)


# --- Gemini (the aisix-gemini target: OpenAI in, translated to Gemini's wire) ---------------

GEMINI_ANSWER: dict[str, object] = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "Hello there, how are you?"}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 14, "candidatesTokenCount": 7, "totalTokenCount": 21},
    "modelVersion": "gemini-2.5-flash",
    "responseId": "bench0001",
}


def gemini_json() -> str:
    """The non-streaming `generateContent` answer, compact JSON."""
    return json.dumps(GEMINI_ANSWER, separators=(",", ":"))


def gemini_sse_body(chunks: int = 8) -> bytes:
    """The fixed `streamGenerateContent?alt=sse` body: `chunks` text chunks, the last one with
    finishReason and usage (Gemini streams have no end marker)."""
    events = []
    for i in range(chunks):
        candidate: dict[str, object] = {
            "content": {"role": "model", "parts": [{"text": f"tok{i} "}]},
            "index": 0,
        }
        chunk: dict[str, object] = {"candidates": [candidate], "responseId": "bench0001"}
        if i == chunks - 1:
            candidate["finishReason"] = "STOP"
            chunk["usageMetadata"] = {
                "promptTokenCount": 14,
                "candidatesTokenCount": chunks,
                "totalTokenCount": 14 + chunks,
            }
        events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    return b"".join(events)


def request_body(model: str, *, stream: bool) -> str:
    """The chat request every client sends."""
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 32,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))
