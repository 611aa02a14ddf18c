"""Fixed wire bodies served by the benchmark upstreams and sent by its clients.

One place for the chat.completion JSON that nginx returns, the SSE body of the fixed stream,
the chunk events the paced upstream emits, the same answer in the other wire families that
nginx serves for the adapter rows (Anthropic Messages JSON and SSE, Gemini generateContent
JSON and SSE, Bedrock Converse JSON and ConverseStream event-stream frames), and the request
bodies the load generators send (valid as OpenAI chat and as Anthropic Messages). Every body is
deterministic so each target relays exactly the same bytes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


ANSWER_TEXT = "Hello there, how are you?"


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- Anthropic Messages (the aisix-anthropic-native and aisix-anthropic rows) ---------------

ANTHROPIC_MODEL = "claude-sonnet-4-5"
ANTHROPIC_MESSAGE: dict[str, object] = {
    "id": "msg_bench0001",
    "type": "message",
    "role": "assistant",
    "model": ANTHROPIC_MODEL,
    "content": [{"type": "text", "text": ANSWER_TEXT}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 14, "output_tokens": 7},
}


def anthropic_json() -> str:
    """The non-streaming Messages answer, compact JSON."""
    return _compact(ANTHROPIC_MESSAGE)


def _anthropic_event(kind: str, data: dict[str, object]) -> bytes:
    return f"event: {kind}\ndata: {_compact({'type': kind, **data})}\n\n".encode()


def anthropic_sse_body(chunks: int = 8) -> bytes:
    """The fixed Messages stream: message_start, one text block of `chunks` deltas,
    message_delta (stop reason, output tokens) and message_stop, as Anthropic sends them."""
    start = {**ANTHROPIC_MESSAGE, "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": 14, "output_tokens": 1}
    parts = [
        _anthropic_event("message_start", {"message": start}),
        _anthropic_event(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        ),
        _anthropic_event("ping", {}),
    ]
    parts += [
        _anthropic_event(
            "content_block_delta",
            {"index": 0, "delta": {"type": "text_delta", "text": f"tok{i} "}},
        )
        for i in range(chunks)
    ]
    parts.append(_anthropic_event("content_block_stop", {"index": 0}))
    parts.append(
        _anthropic_event(
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": chunks},
            },
        )
    )
    parts.append(_anthropic_event("message_stop", {}))
    return b"".join(parts)


# --- Gemini (the aisix-gemini row: OpenAI in, translated to Gemini's wire) ------------------

GEMINI_MODEL = "gemini-2.5-flash"
GEMINI_ANSWER: dict[str, object] = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": ANSWER_TEXT}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 14, "candidatesTokenCount": 7, "totalTokenCount": 21},
    "modelVersion": GEMINI_MODEL,
    "responseId": "bench0001",
}


def gemini_json() -> str:
    """The non-streaming `generateContent` answer, compact JSON."""
    return _compact(GEMINI_ANSWER)


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
        events.append(b"data: " + _compact(chunk).encode() + b"\n\n")
    return b"".join(events)


# --- Bedrock Converse (the aisix-bedrock row: OpenAI in, translated to Converse) ------------

BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
BEDROCK_ANSWER: dict[str, object] = {
    "output": {"message": {"role": "assistant", "content": [{"text": ANSWER_TEXT}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 14, "outputTokens": 7, "totalTokens": 21},
    "metrics": {"latencyMs": 12},
}


def bedrock_json() -> str:
    """The non-streaming Converse answer, compact JSON."""
    return _compact(BEDROCK_ANSWER)


def bedrock_stream_body(chunks: int = 8) -> bytes:
    """The fixed ConverseStream body: AWS event-stream binary frames (messageStart, `chunks`
    contentBlockDelta, contentBlockStop, messageStop, metadata with usage), encoded with the
    encoder of the test suite's fake Bedrock (tests/fakes/bedrock_upstream.py), so the bench
    serves the frames the tests prove against boto3. Raises ImportError without that module's
    dependencies (aiohttp, botocore: the repo venv with the test extra)."""
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    from fakes.bedrock_upstream import event

    frames = [event("messageStart", {"role": "assistant"})]
    frames += [
        event("contentBlockDelta", {"delta": {"text": f"tok{i} "}, "contentBlockIndex": 0})
        for i in range(chunks)
    ]
    frames.append(event("contentBlockStop", {"contentBlockIndex": 0}))
    frames.append(event("messageStop", {"stopReason": "end_turn"}))
    usage = {"inputTokens": 14, "outputTokens": chunks, "totalTokens": 14 + chunks}
    frames.append(event("metadata", {"usage": usage, "metrics": {"latencyMs": 12}}))
    return b"".join(frames)


# --- what the clients send ------------------------------------------------------------------


def request_body(model: str, *, stream: bool) -> str:
    """The request every client sends. The same body is a valid OpenAI chat request (to
    /v1/chat/completions) and a valid Anthropic Messages request (to /v1/messages): a model,
    one user message with string content, `max_tokens`, and `stream` when streaming."""
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 32,
    }
    if stream:
        body["stream"] = True
    return _compact(body)
