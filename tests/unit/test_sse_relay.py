"""The SSE relay (contract §6.8): event decoding, per-chunk rewriting and stream endings."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from aisix.errors import UpstreamDecodeError, UpstreamError
from aisix.providers.h1 import ConnectionClosed
from aisix.proxy.relay import StreamState, relay_rest
from aisix.wire.openai_in import DONE, PassthroughStream
from aisix.wire.sse import SSEDecoder


def feed_split(raw: bytes, cut: int) -> list[bytes]:
    decoder = SSEDecoder()
    return decoder.payloads(raw[:cut]) + decoder.payloads(raw[cut:]) + decoder.flush_payloads()


def feed_bytewise(raw: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    out: list[bytes] = []
    for i in range(len(raw)):
        out += decoder.payloads(raw[i : i + 1])
    return out + decoder.flush_payloads()


# --- SSEDecoder ----------------------------------------------------------------------------

TWO_EVENTS = b'data: {"a":1}\n\ndata: {"b":2}\n\n'


def test_decoder_yields_one_payload_per_event() -> None:
    assert SSEDecoder().payloads(TWO_EVENTS) == [b'{"a":1}', b'{"b":2}']


@pytest.mark.parametrize("cut", range(1, len(TWO_EVENTS)))
def test_decoder_events_split_at_any_byte(cut: int) -> None:
    assert feed_split(TWO_EVENTS, cut) == [b'{"a":1}', b'{"b":2}']


def test_decoder_one_byte_at_a_time() -> None:
    assert feed_bytewise(TWO_EVENTS + b"data: [DONE]\n\n") == [b'{"a":1}', b'{"b":2}', b"[DONE]"]


def test_decoder_holds_an_incomplete_event() -> None:
    decoder = SSEDecoder()
    assert decoder.payloads(b'data: {"a":1}\n') == []
    assert decoder.payloads(b"\n") == [b'{"a":1}']


CRLF_EVENTS = b'data: {"a":1}\r\n\r\ndata: {"b":2}\r\n\r\n'


@pytest.mark.parametrize("cut", range(1, len(CRLF_EVENTS)))
def test_decoder_crlf_split_at_any_byte(cut: int) -> None:
    assert feed_split(CRLF_EVENTS, cut) == [b'{"a":1}', b'{"b":2}']


def test_decoder_bare_cr_line_endings() -> None:
    assert SSEDecoder().payloads(b"data: x\r\rdata: y\r\r") == [b"x", b"y"]


MULTILINE = b"data: first\ndata: second\n\n"


def test_decoder_joins_multi_line_data_with_newline() -> None:
    assert SSEDecoder().payloads(MULTILINE) == [b"first\nsecond"]


@pytest.mark.parametrize("cut", range(1, len(MULTILINE)))
def test_decoder_multi_line_split_at_any_byte(cut: int) -> None:
    assert feed_split(MULTILINE, cut) == [b"first\nsecond"]


MULTILINE_CRLF = b"data: first\r\ndata: second\r\n\r\n"


@pytest.mark.parametrize("cut", range(1, len(MULTILINE_CRLF)))
def test_decoder_multi_line_crlf_split_at_any_byte(cut: int) -> None:
    # A CR at the end of one read and its LF at the start of the next are one line ending
    # (SSE spec); the event must not be cut in two.
    assert feed_split(MULTILINE_CRLF, cut) == [b"first\nsecond"]


def test_decoder_ignores_comments_event_and_id_lines() -> None:
    raw = b": ping\n\nevent: message\nid: 7\nretry: 10\ndata: {}\n\n: another comment\n\n"
    assert SSEDecoder().payloads(raw) == [b"{}"]


def test_decoder_data_without_space_after_colon() -> None:
    assert SSEDecoder().payloads(b"data:{}\n\n") == [b"{}"]


def test_flush_returns_an_unterminated_last_event() -> None:
    decoder = SSEDecoder()
    assert decoder.payloads(b'data: {"a":1}\n\ndata: {"last":true}') == [b'{"a":1}']
    assert decoder.flush_payloads() == [b'{"last":true}']
    assert decoder.flush_payloads() == []


def test_flush_of_blank_remainder_is_empty() -> None:
    decoder = SSEDecoder()
    decoder.payloads(b"data: x\n\n\n")
    assert decoder.flush_payloads() == []


# --- PassthroughStream._rewrite ----------------------------------------------------------


def chunk(**fields: Any) -> bytes:
    base: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-2024"}
    return orjson.dumps({**base, **fields})


def sent(out: bytes | None) -> dict[str, Any]:
    assert out is not None
    assert out.startswith(b"data: ") and out.endswith(b"\n\n")
    parsed: dict[str, Any] = orjson.loads(out[6:-2])
    return parsed


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
DELTA = [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]


def test_rewrite_replaces_model_with_alias() -> None:
    state = PassthroughStream("chat-prod", False)
    out = sent(state._rewrite(chunk(choices=DELTA)))
    assert out["model"] == "chat-prod"
    assert out["choices"] == DELTA


def test_usage_chunk_dropped_when_client_did_not_ask() -> None:
    state = PassthroughStream("a", False)
    assert state._rewrite(chunk(choices=[], usage=USAGE)) is None
    assert state.usage is not None
    assert (state.usage.prompt_tokens, state.usage.total_tokens) == (7, 10)


def test_usage_chunk_relayed_when_client_asked() -> None:
    state = PassthroughStream("a", True)
    out = sent(state._rewrite(chunk(choices=[], usage=USAGE)))
    assert out["usage"] == USAGE
    assert out["choices"] == []
    assert out["model"] == "a"
    assert state.usage is not None and state.usage.completion_tokens == 3


def test_null_usage_removed_only_when_not_asked() -> None:
    quiet = PassthroughStream("a", False)
    assert "usage" not in sent(quiet._rewrite(chunk(choices=DELTA, usage=None)))
    asked = PassthroughStream("a", True)
    out = sent(asked._rewrite(chunk(choices=DELTA, usage=None)))
    assert "usage" in out and out["usage"] is None


def test_usage_on_a_content_chunk_is_kept() -> None:
    state = PassthroughStream("a", False)
    out = sent(state._rewrite(chunk(choices=DELTA, usage=USAGE)))
    assert out["choices"] == DELTA
    assert state.usage is not None and state.usage.total_tokens == 10


def test_error_payload_raises_upstream_error_with_its_message() -> None:
    state = PassthroughStream("a", False)
    payload = orjson.dumps({"error": {"message": "overloaded", "type": "server_error"}})
    with pytest.raises(UpstreamError) as caught:
        state._rewrite(payload)
    assert caught.value.message == "overloaded"
    assert caught.value.type == "upstream_error"


def test_invalid_json_raises_decode_error() -> None:
    state = PassthroughStream("a", False)
    with pytest.raises(UpstreamDecodeError):
        state._rewrite(b"{not json")
    with pytest.raises(UpstreamDecodeError):
        state._rewrite(b"[1, 2]")


def test_generated_bytes_counted_for_chat_and_completions() -> None:
    state = PassthroughStream("a", False)
    state._rewrite(chunk(choices=[{"index": 0, "delta": {"content": "héllo"}}]))
    state._rewrite(chunk(choices=[{"index": 0, "delta": {"role": "assistant"}}]))
    assert state.generated_chars == len("héllo".encode())  # 6 bytes, not 5 characters
    state._rewrite(chunk(object="text_completion", choices=[{"index": 0, "text": "abc"}]))
    assert state.generated_chars == 9


# --- relay_rest end-to-end over a fake upstream response -----------------------------------


class _Response:
    """Stands in for `aisix.providers.h1.Response`: scripted reads."""

    def __init__(self, reads: list[bytes | BaseException]) -> None:
        self._reads = reads

    async def read_chunk(self, timeout: float | None) -> bytes:
        item = self._reads.pop(0) if self._reads else b""
        if isinstance(item, BaseException):
            raise item
        return item


def run_relay(reads: list[bytes | BaseException], wants_usage: bool = False) -> tuple[bytes, Any]:
    state = StreamState(PassthroughStream("alias", wants_usage), head_sent=True)
    messages: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        messages.append(dict(message))

    response: Any = _Response(reads)
    asyncio.run(relay_rest(response, state, send, 1000))
    assert messages[-1].get("more_body", False) is False
    return b"".join(m["body"] for m in messages), state


def test_relay_appends_done_when_upstream_omits_it() -> None:
    body, state = run_relay([b"data: " + chunk(choices=DELTA) + b"\n\n"])
    assert body.endswith(DONE)
    assert body.count(b"[DONE]") == 1
    assert state.error is None


def test_relay_stops_at_done_and_drops_usage_chunk() -> None:
    usage = b"data: " + chunk(choices=[], usage=USAGE) + b"\n\n"
    body, state = run_relay([usage + b"data: [DONE]\n\n"])
    assert body == DONE
    assert state.relay.done and state.relay.usage is not None


def test_relay_mid_stream_failure_sends_error_event_without_done() -> None:
    first = b"data: " + chunk(choices=DELTA) + b"\n\n"
    body, state = run_relay([first, ConnectionClosed("reset")])
    assert b"[DONE]" not in body
    last_event = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    error = orjson.loads(last_event.removeprefix(b"data: "))["error"]
    assert error["type"] == "upstream_error"
    assert state.error is not None and state.error.code == "connection_error"
