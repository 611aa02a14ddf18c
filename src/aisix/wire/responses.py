"""The OpenAI Responses API (`POST /v1/responses`) as an inbound codec.

Same-family targets (providers whose API has `/responses`) get the client's body as is, with
`model` rewritten; for every other target the request is translated to canonical: `input` as
a string or an item list (messages with input_text / input_image / input_file parts,
function_call, function_call_output, reasoning), `instructions`, function tools and
`tool_choice`, `text.format` → `response_format`, `max_output_tokens`, `reasoning.effort`.
The answer becomes a `response` object (output items: reasoning, message with output_text,
function_call; usage as input/output tokens with details), and a stream becomes the
documented event sequence (`response.created` … `response.completed`, or `error` then
`response.failed` after a cut). Items of other types that chat cannot express are dropped
and counted.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from aisix.errors import GatewayError
from aisix.wire.base import Endpoint, StreamEncoder, StreamRelay
from aisix.wire.openai_in import merge_usage
from aisix.wire.request import invalid, parse_model_request
from aisix.wire.sse import SSEDecoder
from aisix.wire.types import (
    ChatRequest,
    ChatResponse,
    FilePart,
    Finish,
    ImagePart,
    Message,
    NamedTool,
    Part,
    StreamEvent,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolChoice,
    Usage,
    UsageReport,
)

FAMILY = "openai-responses"
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def response_id(request_id: str) -> str:
    return "resp_" + "".join(c for c in request_id if c.isalnum())


def parse(raw: bytes) -> dict[str, Any]:
    body = parse_model_request(raw)
    items = body.get("input")
    if not isinstance(items, str | list):
        raise invalid('"input" is required and must be a string or an array of items', "input")
    if isinstance(items, list) and not all(isinstance(i, dict) for i in items):
        raise invalid('"input" items must be objects', "input")
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise invalid('"previous_response_id" must be a string', "previous_response_id")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid('"instructions" must be a string', "instructions")
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise invalid('"max_output_tokens" must be a positive integer', "max_output_tokens")
    return body


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """`input` as an item list (a string is one user message)."""
    items = body.get("input")
    if isinstance(items, str):
        return [{"type": "message", "role": "user", "content": items}]
    return list(items or ())


# --- request → canonical ----------------------------------------------------------------------


def _parts(content: Any, dropped: list[str]) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    parts: list[Part] = []
    for part in content or ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append(TextPart(part["text"]))
        elif kind == "input_image":
            url = part.get("image_url")
            detail = part.get("detail") if isinstance(part.get("detail"), str) else None
            if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
                media_type, _, data = url[5:].partition(";base64,")
                parts.append(ImagePart(data=data, media_type=media_type, detail=detail))
            elif isinstance(url, str):
                parts.append(ImagePart(url=url, detail=detail))
            else:
                dropped.append("input_image:file_id")
        elif kind == "input_file":
            parts.append(_file(part))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append(TextPart(part["refusal"]))
        else:
            dropped.append(str(kind or "part"))
    return parts


def _file(part: dict[str, Any]) -> FilePart:
    data = part.get("file_data")
    name = part.get("filename") if isinstance(part.get("filename"), str) else None
    if isinstance(data, str) and data.startswith("data:") and ";base64," in data:
        media_type, _, payload = data[5:].partition(";base64,")
        return FilePart(data=payload, media_type=media_type, name=name)
    if isinstance(data, str):
        return FilePart(data=data, media_type="application/pdf", name=name)
    file_id = part.get("file_id")
    url = part.get("file_url")
    return FilePart(
        file_id=file_id if isinstance(file_id, str) else None,
        url=url if isinstance(url, str) else None,
        name=name,
    )


def items_to_messages(items: list[dict[str, Any]], dropped: list[str]) -> list[Message]:
    """Responses input items as chat messages: consecutive function calls join one assistant
    turn, outputs become tool messages, reasoning attaches to the next assistant turn."""
    messages: list[Message] = []
    pending_thinking: list[Part] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = _ROLES.get(str(item.get("role")))
            if role is None:
                dropped.append("message:role")
                continue
            parts = _parts(item.get("content"), dropped)
            if role == "assistant" and pending_thinking:
                parts = [*pending_thinking, *parts]
                pending_thinking = []
            messages.append(Message(role, parts))  # type: ignore[arg-type]
        elif kind == "function_call":
            call = ToolCall(
                str(item.get("call_id") or item.get("id") or ""),
                str(item.get("name") or ""),
                item["arguments"] if isinstance(item.get("arguments"), str) else "{}",
            )
            last = messages[-1] if messages else None
            if (
                last is not None
                and last.role == "assistant"
                and (last.tool_calls or not last.text())
            ):
                last.tool_calls.append(call)
            else:
                messages.append(Message("assistant", list(pending_thinking), [call]))
                pending_thinking = []
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _output_text(output)
            messages.append(
                Message("tool", [TextPart(text)], tool_call_id=str(item.get("call_id") or ""))
            )
        elif kind == "reasoning":
            summary = item.get("summary")
            text = (
                "".join(s.get("text", "") for s in summary or () if isinstance(s, dict))
                if isinstance(summary, list)
                else ""
            )
            secret = item.get("encrypted_content")
            pending_thinking.append(
                ThinkingPart(text=text, signature=secret if isinstance(secret, str) else None)
            )
        else:
            dropped.append(str(kind))
    return messages


def _output_text(output: Any) -> str:
    if isinstance(output, list):
        return "".join(
            p.get("text", "")
            for p in output
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return orjson.dumps(output).decode() if output is not None else ""


def _tools(raw: Any, dropped: list[str]) -> list[Tool]:
    tools: list[Tool] = []
    if raw is not None and not isinstance(raw, list):
        raise invalid('"tools" must be an array', "tools")
    for tool in raw or ():
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "function" and isinstance(tool.get("name"), str):
            parameters = tool.get("parameters")
            if not isinstance(parameters, dict):
                parameters = {"type": "object", "properties": {}}
            description = tool.get("description")
            tools.append(
                Tool(
                    tool["name"],
                    description if isinstance(description, str) else None,
                    parameters
                    if isinstance(parameters, dict)
                    else {"type": "object", "properties": {}},
                )
            )
        else:
            dropped.append(f"tool:{tool.get('type')}")
    return tools


def _tool_choice(raw: Any) -> ToolChoice | None:
    if raw in ("auto", "none", "required"):
        choice: ToolChoice = raw
        return choice
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return NamedTool(raw["name"])
    return None


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    return None


def to_canonical(body: dict[str, Any]) -> ChatRequest:
    previous = body.get("previous_response_id")
    if previous is not None:  # the gateway expands the ones it stored before dispatch
        raise invalid(f"Previous response with id '{previous}' not found.", "previous_response_id")
    request = ChatRequest(model=body["model"], messages=[], source_family=FAMILY)
    dropped = request.dropped
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        request.messages.append(Message("system", [TextPart(instructions)]))
    request.messages.extend(items_to_messages(input_items(body), dropped))
    request.stream = body.get("stream") is True
    request.include_usage = True
    limit = body.get("max_output_tokens")
    request.max_tokens = limit if isinstance(limit, int) else None
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            setattr(request, name, float(value))
    request.tools = _tools(body.get("tools"), dropped)
    request.tool_choice = _tool_choice(body.get("tool_choice"))
    request.response_format = _response_format(body.get("text"))
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        request.reasoning_effort = reasoning["effort"]
    parallel = body.get("parallel_tool_calls")
    request.parallel_tool_calls = parallel if isinstance(parallel, bool) else None
    user = body.get("user")
    request.user = user if isinstance(user, str) else None
    return request


# --- canonical → response object ---------------------------------------------------------------


def usage_json(usage: Usage | None) -> dict[str, Any]:
    usage = usage or Usage()
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
    }


def envelope(
    rid: str, alias: str, body: dict[str, Any], status: str, created: int
) -> dict[str, Any]:
    """The `response` object around `output` and `usage` (filled in by the caller)."""
    text = body.get("text") if isinstance(body.get("text"), dict) else {"format": {"type": "text"}}
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": alias,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": text,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def output_items(message: Message, rid: str) -> list[dict[str, Any]]:
    base = rid.removeprefix("resp_")
    items: list[dict[str, Any]] = []
    thinking = [p for p in message.content if isinstance(p, ThinkingPart)]
    if thinking:
        summary = [{"type": "summary_text", "text": p.text} for p in thinking if p.text]
        item: dict[str, Any] = {"type": "reasoning", "id": f"rs_{base}", "summary": summary}
        signature = next((p.signature for p in thinking if p.signature), None)
        if signature:
            item["encrypted_content"] = signature
        items.append(item)
    text = message.text()
    if text or not message.tool_calls:
        items.append(
            {
                "type": "message",
                "id": f"msg_{base}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    for i, call in enumerate(message.tool_calls):
        items.append(
            {
                "type": "function_call",
                "id": f"fc_{base}_{i}",
                "call_id": call.id or f"call_{base}_{i}",
                "name": call.name,
                "arguments": call.arguments,
                "status": "completed",
            }
        )
    return items


def render(
    response: ChatResponse, alias: str, request_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    rid = response_id(request_id)
    status = "incomplete" if response.finish_reason == "length" else "completed"
    out = envelope(rid, alias, body, status, response.created or int(time.time()))
    if status == "incomplete":
        out["incomplete_details"] = {"reason": "max_output_tokens"}
    elif response.finish_reason == "content_filter":
        out["status"] = "incomplete"
        out["incomplete_details"] = {"reason": "content_filter"}
    out["output"] = output_items(response.message, rid)
    out["usage"] = usage_json(response.usage)
    return out


class EventEncoder:
    """Canonical events → the Responses streaming event sequence (one per stream)."""

    def __init__(self, alias: str, request_id: str, body: dict[str, Any]) -> None:
        self._rid = response_id(request_id)
        self._base = self._rid.removeprefix("resp_")
        self._response = envelope(self._rid, alias, body, "in_progress", int(time.time()))
        self._seq = 0
        self._started = False
        self._items: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the output item being streamed
        self._calls: dict[int, int] = {}  # canonical tool index → output index
        self._usage: Usage | None = None
        self._reason: str | None = None

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _start(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            out.append(self._event("response.created", response=self._response))
            out.append(self._event("response.in_progress", response=self._response))

    def _close_open(self, out: list[bytes]) -> None:
        item = self._open
        if item is None:
            return
        self._open = None
        index = len(self._items)
        if item["type"] == "message":
            part = item["content"][0]
            common = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out.append(
                self._event("response.output_text.done", text=part["text"], logprobs=[], **common)
            )
            out.append(self._event("response.content_part.done", part=part, **common))
        elif item["type"] == "reasoning":
            pass
        item["status"] = "completed"
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        self._items.append(item)

    def _open_item(self, item: dict[str, Any], out: list[bytes]) -> None:
        self._close_open(out)
        self._open = item
        out.append(
            self._event("response.output_item.added", output_index=len(self._items), item=item)
        )

    def encode(self, events: list[StreamEvent]) -> bytes:
        out: list[bytes] = []
        self._start(out)
        for ev in events:
            if isinstance(ev, TextDelta):
                self._text(ev.text, out)
            elif isinstance(ev, ThinkingDelta):
                self._thinking(ev, out)
            elif isinstance(ev, ToolCallStart):
                call_id = ev.id or f"call_{self._base}_{ev.index}"
                item = {
                    "type": "function_call",
                    "id": f"fc_{self._base}_{ev.index}",
                    "call_id": call_id,
                    "name": ev.name,
                    "arguments": "",
                    "status": "in_progress",
                }
                self._open_item(item, out)
                self._calls[ev.index] = len(self._items)
            elif isinstance(ev, ToolCallDelta):
                self._arguments(ev, out)
            elif isinstance(ev, Finish):
                self._reason = ev.reason
            elif isinstance(ev, UsageReport):
                self._usage = merge_usage(self._usage, ev.usage)
        return b"".join(out)

    def _text(self, text: str, out: list[bytes]) -> None:
        item = self._open
        if item is None or item["type"] != "message":
            item = {
                "type": "message",
                "id": f"msg_{self._base}_{len(self._items)}",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self._open_item(item, out)
            part = {"type": "output_text", "text": "", "annotations": []}
            item["content"].append(part)
            common = {"item_id": item["id"], "output_index": len(self._items), "content_index": 0}
            out.append(self._event("response.content_part.added", part=part, **common))
        item["content"][0]["text"] += text
        common = {"item_id": item["id"], "output_index": len(self._items), "content_index": 0}
        out.append(self._event("response.output_text.delta", delta=text, logprobs=[], **common))

    def _thinking(self, ev: ThinkingDelta, out: list[bytes]) -> None:
        item = self._open
        if item is None or item["type"] != "reasoning":
            item = {"type": "reasoning", "id": f"rs_{self._base}_{len(self._items)}", "summary": []}
            self._open_item(item, out)
        if ev.text:
            if not item["summary"]:
                item["summary"].append({"type": "summary_text", "text": ""})
            item["summary"][0]["text"] += ev.text
        if ev.signature:
            item["encrypted_content"] = ev.signature

    def _arguments(self, ev: ToolCallDelta, out: list[bytes]) -> None:
        item = self._open
        if (
            item is None
            or item["type"] != "function_call"
            or self._calls.get(ev.index) != len(self._items)
        ):
            return  # a fragment for a call that is not the open one: chat streams calls in order
        item["arguments"] += ev.arguments
        out.append(
            self._event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=len(self._items),
                delta=ev.arguments,
            )
        )

    def _finish_call(self, out: list[bytes]) -> None:
        item = self._open
        if item is not None and item["type"] == "function_call":
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=len(self._items),
                    arguments=item["arguments"],
                )
            )

    def finished_response(self) -> dict[str, Any]:
        """The final `response` object (for the store), once `finish` has run."""
        return self._response

    def finish(self) -> bytes:
        out: list[bytes] = []
        self._start(out)
        self._finish_call(out)
        self._close_open(out)
        response = self._response
        response["output"] = self._items
        response["usage"] = usage_json(self._usage)
        if self._reason == "length":
            response["status"] = "incomplete"
            response["incomplete_details"] = {"reason": "max_output_tokens"}
            out.append(self._event("response.incomplete", response=response))
        else:
            response["status"] = "completed"
            out.append(self._event("response.completed", response=response))
        return b"".join(out)

    def error(self, err: GatewayError) -> bytes:
        out: list[bytes] = []
        self._start(out)
        out.append(self._event("error", code=err.code or err.type, message=err.message, param=None))
        response = self._response
        response["status"] = "failed"
        response["output"] = self._items
        response["error"] = {"code": "server_error", "message": err.message}
        out.append(self._event("response.failed", response=response))
        return b"".join(out)


# --- same-family relay -------------------------------------------------------------------------

_RESPONSE_EVENTS = frozenset(
    {
        b"response.created",
        b"response.in_progress",
        b"response.completed",
        b"response.failed",
        b"response.incomplete",
        b"response.queued",
    }
)


def usage_of(body: dict[str, Any]) -> Usage | None:
    """Usage of a Responses `response` object (clamped)."""
    raw = body.get("usage")
    if not isinstance(raw, dict):
        return None
    details = raw.get("input_tokens_details")
    out_details = raw.get("output_tokens_details")
    return Usage.of(
        raw.get("input_tokens"),
        raw.get("output_tokens"),
        details.get("cached_tokens", 0) if isinstance(details, dict) else 0,
        raw.get("total_tokens"),
        reasoning=out_details.get("reasoning_tokens", 0) if isinstance(out_details, dict) else 0,
    )


class PassthroughStream:
    """Relays a Responses SSE stream: `model` := alias in every `response` object, usage from
    the terminal event; `error` / `response.failed` from the upstream end it as a failure."""

    def __init__(self, alias: str) -> None:
        self._alias = alias
        self._sse = SSEDecoder()
        self.usage: Usage | None = None
        self.generated_chars = 0
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> bytes:
        return self._relay(self._sse.feed(data))

    def end(self) -> bytes:
        return self._relay(self._sse.flush())

    def _relay(self, events: list[Any]) -> bytes:
        out: list[bytes] = []
        for ev in events:
            if self._done:
                break
            try:
                data: Any = orjson.loads(ev.data)
            except orjson.JSONDecodeError:
                from aisix.errors import UpstreamDecodeError

                raise UpstreamDecodeError(
                    "upstream sent a stream event that is not valid JSON"
                ) from None
            kind = data.get("type") if isinstance(data, dict) else None
            if not isinstance(kind, str):
                continue
            response = data.get("response")
            if isinstance(response, dict):
                response["model"] = self._alias
                if kind in ("response.completed", "response.incomplete", "response.failed"):
                    self.usage = usage_of(response) or self.usage
                    self._done = True
            elif kind == "response.output_text.delta" and isinstance(data.get("delta"), str):
                self.generated_chars += len(data["delta"].encode())
            out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")
        return b"".join(out)

    def terminal(self) -> bytes:
        return b""

    def error(self, err: GatewayError) -> bytes:
        payload = {
            "type": "error",
            "code": err.code or err.type,
            "message": err.message,
            "param": None,
        }
        return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"


class ResponsesInbound:
    name = "openai-responses"
    family = FAMILY
    endpoint: Endpoint = "responses"
    forward_headers: frozenset[bytes] = frozenset()

    def parse(self, raw: bytes) -> dict[str, Any]:
        return parse(raw)

    def to_canonical(self, body: dict[str, Any]) -> ChatRequest:
        return to_canonical(body)

    def render(
        self, response: ChatResponse, alias: str, request_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return render(response, alias, request_id, body)

    def stream_encoder(self, alias: str, request_id: str, body: dict[str, Any]) -> StreamEncoder:
        return EventEncoder(alias, request_id, body)

    def passthrough_stream(self, alias: str, body: dict[str, Any]) -> StreamRelay:
        return PassthroughStream(alias)

    def passthrough_answer(self, body: dict[str, Any], alias: str) -> dict[str, Any]:
        body["model"] = alias
        return body

    def error_body(self, err: GatewayError) -> bytes:
        return err.openai_body()


RESPONSES = ResponsesInbound()
