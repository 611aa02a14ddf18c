"""The bench's fixed bodies of the adapter rows are valid wire of their family: the Anthropic
Messages and Bedrock Converse answers decode with the gateway's codecs to the same answer the
OpenAI rows relay, their streams translate to eight OpenAI content chunks with usage, and the
stream probe counts eight content chunks in every family's fixed stream, however it is split
into reads."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import fixtures  # noqa: E402
import stream_probe  # noqa: E402
from aisix.wire import bedrock  # noqa: E402
from aisix.wire.anthropic import CODEC as ANTHROPIC  # noqa: E402
from aisix.wire.openai_in import CHAT  # noqa: E402
from aisix.wire.translate import TranslatingRelay  # noqa: E402

OPENAI_TEXT = fixtures.COMPLETION["choices"][0]["message"]["content"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("codec", "body"),
    [(ANTHROPIC, fixtures.anthropic_json()), (bedrock.CODEC, fixtures.bedrock_json())],
    ids=["anthropic", "bedrock"],
)
def test_fixed_answer_decodes_like_the_openai_one(codec: object, body: str) -> None:
    response = codec.decode_response(orjson.loads(body))  # type: ignore[attr-defined]
    assert response.message.text() == OPENAI_TEXT
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (14, 7)


@pytest.mark.parametrize(
    ("codec", "body"),
    [
        (ANTHROPIC, fixtures.anthropic_sse_body()),
        (bedrock.CODEC, fixtures.bedrock_stream_body()),
    ],
    ids=["anthropic", "bedrock"],
)
def test_fixed_stream_translates_to_eight_chunks_with_usage(codec: object, body: bytes) -> None:
    request = {"stream_options": {"include_usage": True}}
    relay = TranslatingRelay(
        codec.stream_decoder(),  # type: ignore[attr-defined]
        CHAT.stream_encoder("bench-sse", "r", request),
    )
    out = relay.feed(body) + relay.end()
    assert relay.done and relay.usage is not None
    assert (relay.usage.prompt_tokens, relay.usage.completion_tokens) == (14, 8)
    out += relay.terminal()
    texts = [f"tok{i} " for i in range(8)]
    assert [t for t in texts if f'"content":"{t}"'.encode() in out] == texts
    assert out.endswith(b"data: [DONE]\n\n")


FIXED = {
    "openai": fixtures.sse_body(),
    "anthropic": fixtures.anthropic_sse_body(),
    "gemini": fixtures.gemini_sse_body(),
    "bedrock": fixtures.bedrock_stream_body(),
}


@pytest.mark.parametrize("fmt", sorted(FIXED))
@pytest.mark.parametrize("read_size", [1, 7, 100_000])
def test_probe_counts_every_content_chunk(fmt: str, read_size: int) -> None:
    body = FIXED[fmt]
    chunks = stream_probe.counter(fmt)
    counted = sum(chunks.feed(body[i : i + read_size]) for i in range(0, len(body), read_size))
    assert counted == 8


@pytest.mark.parametrize("fmt", ["anthropic", "gemini", "bedrock"])
def test_probe_finds_no_content_in_another_family(fmt: str) -> None:
    # the OpenAI stream read as another family (and vice versa) has no content chunk of it
    assert stream_probe.counter(fmt).feed(FIXED["openai"]) == 0
    assert stream_probe.counter("openai").feed(FIXED[fmt]) == 0


def test_bedrock_frames_are_aws_event_stream() -> None:
    # botocore's own parser (CRC-checked) reads the frame file nginx serves
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(fixtures.bedrock_stream_body())
    kinds = [message.headers[":event-type"] for message in buffer]
    assert kinds == [
        "messageStart",
        *["contentBlockDelta"] * 8,
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
