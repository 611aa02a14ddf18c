"""Canonical chat and embedding requests → Gemini `generateContent` / embedding bodies.

Per contract §7.3: system and developer messages → `systemInstruction`; user/assistant →
`contents` with roles `user` / `model`; images and files → `inlineData` / `fileData`; tool
calls and results → `functionCall` / `functionResponse` parts (a result's function name is
found from the call it answers); tools → `functionDeclarations` with the JSON Schema reduced
to the OpenAPI subset Gemini accepts; sampling, stops, JSON output and thinking →
`generationConfig`. What has no equivalent is appended to `ChatRequest.dropped`.
"""

from __future__ import annotations

import mimetypes
from typing import Any

import orjson

from aisix.wire.request import invalid
from aisix.wire.types import (
    ChatRequest,
    EmbeddingRequest,
    FilePart,
    ImagePart,
    Message,
    NamedTool,
    NativePart,
    Part,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCall,
)

FAMILY = "gemini"
#: a tool call id carries the Gemini `thoughtSignature` of its functionCall after this marker,
#: so the signature comes back with the call on the next turn (Gemini 3 requires it)
THOUGHT_MARK = "__thought__"
#: `reasoning_effort` → `thinkingBudget` tokens (the values LiteLLM uses)
EFFORT_BUDGETS = {"none": 0, "minimal": 128, "low": 1024, "medium": 2048, "high": 4096}
#: the OpenAPI-schema keywords Gemini's `Schema` accepts
_SCHEMA_KEYS = frozenset(
    {
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "propertyOrdering",
        "default",
        "minimum",
        "maximum",
    }
)
#: JSON Schema bookkeeping that is resolved (or meaningless) rather than dropped
_SCHEMA_SILENT = frozenset({"$schema", "$defs", "definitions", "$id", "$comment", "strict"})
_MAX_SCHEMA_DEPTH = 32
#: OpenAI-inbound extras with a generationConfig equivalent
_EXTRA_CONFIG = {"presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}
_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


def _drop(dropped: list[str], name: str) -> None:
    if name not in dropped:
        dropped.append(name)


def split_call_id(call_id: str) -> tuple[str, str | None]:
    """(the id, the Gemini thought signature it carries or None)."""
    head, mark, signature = call_id.partition(THOUGHT_MARK)
    return (head, signature) if mark and signature else (call_id, None)


# --- parts and messages ----------------------------------------------------------------------


def _mime_of(url: str, given: str | None, fallback: str) -> str:
    if given:
        return given
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    return guessed or fallback


def _part(part: Part, dropped: list[str]) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"text": part.text} if part.text else None
    if isinstance(part, ImagePart):
        if part.data is not None:
            return {"inlineData": {"mimeType": part.media_type or "image/png", "data": part.data}}
        if part.url:
            mime = _mime_of(part.url, part.media_type, "image/jpeg")
            return {"fileData": {"mimeType": mime, "fileUri": part.url}}
        return None
    if isinstance(part, FilePart):
        if part.data is not None:
            mime = part.media_type or "application/pdf"
            return {"inlineData": {"mimeType": mime, "data": part.data}}
        uri = part.url or part.file_id
        if uri and ("://" in uri or uri.startswith("files/")):
            mime = _mime_of(uri, part.media_type, "application/pdf")
            return {"fileData": {"mimeType": mime, "fileUri": uri}}
        _drop(dropped, "file_id")
        return None
    if isinstance(part, ThinkingPart):
        _drop(dropped, "thinking")
        return None
    if isinstance(part, NativePart):
        if part.family == FAMILY:
            return part.block
        _drop(dropped, str(part.block.get("type") or "block"))
    return None


def _arguments(call: ToolCall, dropped: list[str]) -> dict[str, Any]:
    try:
        args = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        _drop(dropped, "tool_call_arguments")
        return {}
    return args if isinstance(args, dict) else {"value": args}


def _function_call(call: ToolCall, dropped: list[str]) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": call.name, "args": _arguments(call, dropped)}}
    _, signature = split_call_id(call.id)
    if signature:
        part["thoughtSignature"] = signature
    return part


def _function_response(message: Message, names: dict[str, str]) -> dict[str, Any]:
    text = message.text()
    call_id = message.tool_call_id or ""
    name = names.get(call_id) or message.name or split_call_id(call_id)[0]
    response: Any
    if message.is_error:
        response = {"error": text}
    else:
        try:
            response = orjson.loads(text) if text else None
        except orjson.JSONDecodeError:
            response = None
        # Gemini wants an object: "output" is its documented key for a function's result
        if not isinstance(response, dict):
            response = {"output": text}
    return {"functionResponse": {"name": name, "response": response}}


def _contents(
    messages: list[Message], dropped: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents): consecutive turns of one role are merged."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for message in messages:
        if message.role == "system":
            for part in message.content:
                if isinstance(part, TextPart) and part.text:
                    system.append({"text": part.text})
                elif not isinstance(part, TextPart):
                    _drop(dropped, "system_non_text")
            continue
        parts: list[dict[str, Any]] = []
        if message.role == "tool":
            role = "user"
            parts.append(_function_response(message, names))
        else:
            role = "model" if message.role == "assistant" else "user"
            parts.extend(j for p in message.content if (j := _part(p, dropped)) is not None)
            for call in message.tool_calls:
                names[call.id] = call.name
                parts.append(_function_call(call, dropped))
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


# --- tools and schemas -----------------------------------------------------------------------


def schema(
    node: Any, dropped: list[str], defs: dict[str, Any] | None = None, depth: int = 0
) -> Any:
    """A JSON Schema reduced to Gemini's OpenAPI subset (local `$ref`s inlined, `null` types
    as `nullable`, `const` as `enum`); unsupported keywords are dropped and named."""
    if not isinstance(node, dict) or depth > _MAX_SCHEMA_DEPTH:
        return {}
    if defs is None:
        defs = {**_mapping(node.get("definitions")), **_mapping(node.get("$defs"))}
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1]) if ref.startswith("#/") else None
        if target is None:
            _drop(dropped, "schema:$ref")
            return {}
        return schema(target, dropped, defs, depth + 1)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type":
            _schema_type(value, out)
        elif key == "properties" and isinstance(value, dict):
            props = {k: schema(v, dropped, defs, depth + 1) for k, v in value.items()}
            if props:
                out["properties"] = props
        elif key == "items":
            out["items"] = schema(value, dropped, defs, depth + 1)
        elif key in ("anyOf", "oneOf") and isinstance(value, list):
            options = [v for v in value if not (isinstance(v, dict) and v.get("type") == "null")]
            if len(options) < len(value):
                out["nullable"] = True
            if len(options) == 1:
                out.update(schema(options[0], dropped, defs, depth + 1))
            elif options:
                out["anyOf"] = [schema(v, dropped, defs, depth + 1) for v in options]
        elif key == "const":
            out["enum"] = [value]
        elif key in _SCHEMA_KEYS:
            out[key] = value
        elif key not in _SCHEMA_SILENT:
            _drop(dropped, f"schema:{key}")
    if "properties" not in out:
        out.pop("required", None)
    return out


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _schema_type(value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, list):
        kinds = [v for v in value if isinstance(v, str) and v != "null"]
        if len(kinds) < len(value):
            out["nullable"] = True
        value = kinds[0] if kinds else None
    if isinstance(value, str) and value != "null":
        out["type"] = value.upper()
    elif value == "null":
        out["nullable"] = True


def _declaration(tool: Tool, dropped: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    parameters = schema(tool.parameters, dropped)
    # Gemini rejects an OBJECT schema without properties: a function without arguments
    if parameters.get("properties") or parameters.get("type", "OBJECT") != "OBJECT":
        out["parameters"] = parameters
    return out


def _tool_config(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None:
        return None
    if isinstance(choice, NamedTool):
        config = {"mode": "ANY", "allowedFunctionNames": [choice.name]}
    else:
        config = {"mode": _MODES[choice]}
    return {"functionCallingConfig": config}


# --- generationConfig ------------------------------------------------------------------------


def _thinking(request: ChatRequest, dropped: list[str]) -> dict[str, Any] | None:
    if request.thinking_budget is not None:
        budget = request.thinking_budget
    elif request.reasoning_effort is not None:
        effort = EFFORT_BUDGETS.get(request.reasoning_effort)
        if effort is None:
            _drop(dropped, "reasoning_effort")
            return None
        budget = effort
    else:
        return None
    return {"thinkingBudget": budget, "includeThoughts": budget > 0}


def _response_format(fmt: dict[str, Any], config: dict[str, Any], dropped: list[str]) -> None:
    kind = fmt.get("type")
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        config["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema")
        raw = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(raw, dict):
            config["responseSchema"] = schema(raw, dropped)
    elif kind != "text":
        _drop(dropped, "response_format")


def _generation_config(request: ChatRequest, dropped: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    for name, key in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("seed", "seed"),
    ):
        value = getattr(request, name)
        if value is not None:
            config[key] = value
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.response_format is not None:
        _response_format(request.response_format, config, dropped)
    thinking = _thinking(request, dropped)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    return config


def encode_request(request: ChatRequest, model_name: str) -> dict[str, Any]:
    """The `generateContent` body (the stream choice is the URL's, not the body's)."""
    if request.n is not None and request.n > 1:
        raise invalid('"n" greater than 1 is not supported by this model', "n")
    dropped = request.dropped
    system, contents = _contents(request.messages, dropped)
    if not contents:
        raise invalid("messages: a gemini model needs a user or assistant message", "messages")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.tools:
        declarations = [_declaration(t, dropped) for t in request.tools]
        body["tools"] = [{"functionDeclarations": declarations}]
    tool_config = _tool_config(request)
    if tool_config is not None:
        body["toolConfig"] = tool_config
    config = _generation_config(request, dropped)
    if request.source_family == FAMILY:
        body.update(request.extra)
    else:
        for name in sorted(request.extra):
            key = _EXTRA_CONFIG.get(name) if request.source_family == "openai" else None
            if key is not None and isinstance(request.extra[name], int | float):
                config[key] = request.extra[name]
            else:
                _drop(dropped, name)
    if config:
        body["generationConfig"] = config
    if request.user is not None:
        _drop(dropped, "user")
    if request.parallel_tool_calls is not None:
        _drop(dropped, "parallel_tool_calls")
    return body


# --- embeddings ------------------------------------------------------------------------------


def embedding_method(model_name: str, count: int, vertex: bool) -> str:
    """The embeddings API of a model: Gemini models (and every Gemini API model) use
    `embedContent` / `batchEmbedContents`; Vertex's other models use `predict`."""
    if vertex and "gemini" not in model_name.rsplit("/", 1)[-1]:
        return "predict"
    return "embedContent" if count == 1 else "batchEmbedContents"


def encode_embeddings(request: EmbeddingRequest, model_name: str, method: str) -> dict[str, Any]:
    if not request.inputs:
        raise invalid("input: at least one text is required", "input")
    if method == "predict":
        out: dict[str, Any] = {"instances": [{"content": text} for text in request.inputs]}
        if request.dimensions is not None:
            out["parameters"] = {"outputDimensionality": request.dimensions}
        return out
    items: list[dict[str, Any]] = []
    for text in request.inputs:
        item: dict[str, Any] = {"content": {"parts": [{"text": text}]}}
        if request.dimensions is not None:
            item["outputDimensionality"] = request.dimensions
        items.append(item)
    if method == "embedContent":
        return items[0]
    model = model_name if model_name.startswith("models/") else f"models/{model_name}"
    return {"requests": [{"model": model, **item} for item in items]}
