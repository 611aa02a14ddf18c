"""Helpers for the Anthropic codec tests: fixtures, SSE splitting, a Messages accumulator."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "anthropic"


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def raw_fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def events_json(events: list[Any]) -> list[dict[str, Any]]:
    """Canonical events as plain JSON, tagged with their class (the golden form)."""
    return [{"event": type(e).__name__, **dataclasses.asdict(e)} for e in events]


def sse_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """An SSE body as (event name, parsed data) pairs."""
    out: list[tuple[str | None, Any]] = []
    for block in raw.decode().split("\n\n"):
        name = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if data:
            joined = "\n".join(data)
            out.append((name, joined if joined == "[DONE]" else orjson.loads(joined)))
    return out


def pieces(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def accumulate(raw: bytes) -> dict[str, Any]:
    """The final message an Anthropic client builds from a stream (as the SDK does)."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for name, data in sse_events(raw):
        assert name == data["type"], (name, data)
        if name == "message_start":
            message = dict(data["message"])
            message["content"] = []
        elif name == "content_block_start":
            assert data["index"] == len(message["content"]), "block indexes must be dense"
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block = message["content"][data["index"]]
            delta = data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
        elif name == "content_block_stop":
            index = data["index"]
            if index in partial:
                message["content"][index]["input"] = orjson.loads(partial.pop(index) or "{}")
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"] = {**message["usage"], **data["usage"]}
        elif name == "message_stop":
            message["_stopped"] = True
    return message
