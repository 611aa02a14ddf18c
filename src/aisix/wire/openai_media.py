"""OpenAI media and ranking APIs as inbound codecs: images, audio, moderations, rerank.

Each codec parses what a client sent (JSON, or `multipart/form-data` for audio uploads: just
enough to find `model` and re-encode the body with it rewritten), says which upstream path
serves it, and reads the answer's billable units (images generated, audio seconds, speech
characters) into `MediaUnits`. They are served only by OpenAI-family targets that offer the
API (no translation: any other family is a 501 naming the adapter). Speech answers are binary
audio relayed byte for byte (`RawRelay`); every other answer is relayed with `model` := alias
when it is JSON, or as the upstream's bytes (e.g. `response_format: text`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from aisix.errors import GatewayError, NotImplementedByAdapter, UpstreamDecodeError
from aisix.wire.base import Endpoint, StreamEncoder, StreamRelay
from aisix.wire.openai import FAMILY
from aisix.wire.request import invalid, parse_model_request
from aisix.wire.types import ChatRequest, ChatResponse, MediaUnits, Usage

#: the key of a parsed upload's `MultipartForm` in the body dict (never a client JSON field:
#: uploads are not JSON)
FORM = "_form"
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
_DISPOSITION = re.compile(rb"^content-disposition:(.*)$", re.IGNORECASE | re.MULTILINE)
#: text fields of an upload kept in the body dict (for estimates and answers)
_TEXT_FIELDS = frozenset({"model", "response_format", "language", "prompt", "temperature"})
_MAX_N = 128


@dataclass(slots=True)
class FormPart:
    name: str
    #: the part's header block, as sent (without the blank line)
    head: bytes
    value: bytes


@dataclass(slots=True)
class MultipartForm:
    """A parsed `multipart/form-data` body, re-encodable with one field replaced."""

    boundary: bytes
    parts: list[FormPart] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        return "multipart/form-data; boundary=" + self.boundary.decode("latin-1")

    def encode(self, model: str) -> bytes:
        """The body with the `model` field's value := `model` (same boundary)."""
        delim = b"--" + self.boundary
        out: list[bytes] = []
        for part in self.parts:
            value = model.encode() if part.name == "model" else part.value
            out += (delim, b"\r\n", part.head, b"\r\n\r\n", value, b"\r\n")
        out += (delim, b"--\r\n")
        return b"".join(out)


def parse_multipart(raw: bytes, content_type: str | None) -> MultipartForm:
    """The parts of an upload; raises `InvalidRequest` for anything that is not one."""
    if not content_type or not content_type.lower().startswith("multipart/form-data"):
        raise invalid("expected a multipart/form-data upload (Content-Type)")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise invalid("the multipart Content-Type has no boundary")
    boundary = match.group(1).strip().encode("latin-1")
    if not 1 <= len(boundary) <= 200:
        raise invalid("the multipart boundary must be 1 to 200 characters")
    pieces = (b"\r\n" + raw).split(b"\r\n--" + boundary)
    if len(pieces) < 2 or not pieces[-1].startswith(b"--"):
        raise invalid("the multipart body is malformed (no closing boundary)")
    form = MultipartForm(boundary)
    for piece in pieces[1:-1]:
        piece = piece.lstrip(b" \t")
        if not piece.startswith(b"\r\n"):
            raise invalid("the multipart body is malformed (boundary line)")
        head, sep, value = piece[2:].partition(b"\r\n\r\n")
        if not sep:
            raise invalid("the multipart body is malformed (part without headers)")
        disposition = _DISPOSITION.search(head)
        name = _NAME.search(disposition.group(1)) if disposition else None
        if name is None:
            raise invalid("a multipart part has no form-data name")
        form.parts.append(FormPart(name.group(1).decode("utf-8", "replace"), head, value))
    return form


@dataclass(slots=True)
class MediaAnswer:
    """A non-stream media answer: a JSON body (model := alias) or the upstream's bytes."""

    body: dict[str, Any] | None
    raw: tuple[str, bytes] | None
    usage: Usage | None
    units: MediaUnits


def _is_json(content_type: str) -> bool:
    kind = content_type.partition(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


class RawRelay:
    """A binary stream relayed as it arrives (speech audio): no framing, no usage."""

    __slots__ = ("_done", "generated_chars", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.generated_chars = 0
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> bytes:
        return data

    def end(self) -> bytes:
        self._done = True
        return b""

    def terminal(self) -> bytes:
        return b""

    def error(self, err: GatewayError) -> bytes:
        return b""  # binary audio has no error frame: the stream just ends short


class MediaInbound:
    """What every media codec shares (the OpenAI error envelope, no translation)."""

    family = FAMILY
    name = "openai-media"
    endpoint: Endpoint = "images"
    forward_headers: frozenset[bytes] = frozenset()
    #: what the 501 of an adapter without this API says: "<subject> not supported by …"
    subject = "images are"
    #: the upstream path under the OpenAI base (`/v1`)
    path = "/images/generations"
    #: the answer is binary and relayed as it arrives (speech)
    binary_stream = False
    #: the request is a multipart upload (audio transcriptions and translations)
    upload = False

    def parse(self, raw: bytes) -> dict[str, Any]:
        body = parse_model_request(raw)
        if "stream" in body and self.endpoint != "audio_speech":
            body.pop("stream")  # image/moderation streams are not relayed: answers come whole
        self.check(body)
        return body

    def check(self, body: dict[str, Any]) -> None:
        """Endpoint-specific field checks (InvalidRequest naming the field)."""

    def to_canonical(self, body: dict[str, Any]) -> ChatRequest:
        raise NotImplementedByAdapter(f"{self.subject} served by OpenAI-family targets only")

    def render(
        self, response: ChatResponse, alias: str, request_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        raise NotImplementedByAdapter(f"{self.subject} served by OpenAI-family targets only")

    def stream_encoder(self, alias: str, request_id: str, body: dict[str, Any]) -> StreamEncoder:
        raise NotImplementedByAdapter(f"{self.subject} served by OpenAI-family targets only")

    def passthrough_stream(self, alias: str, body: dict[str, Any]) -> StreamRelay:
        return RawRelay()

    def passthrough_answer(self, body: dict[str, Any], alias: str) -> dict[str, Any]:
        if "model" in body:
            body["model"] = alias
        return body

    def error_body(self, err: GatewayError) -> bytes:
        return err.openai_body()

    def answer(
        self, content_type: str, raw: bytes, alias: str, request: dict[str, Any]
    ) -> MediaAnswer:
        """The client's answer for an upstream 2xx (malformed JSON: `UpstreamDecodeError`)."""
        if not _is_json(content_type):
            return MediaAnswer(None, (content_type, raw), None, self.units(request, None))
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamDecodeError("upstream returned a body that is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise UpstreamDecodeError("upstream returned JSON that is not an object")
        units = self.units(request, parsed)
        return MediaAnswer(self.passthrough_answer(parsed, alias), None, self.usage(parsed), units)

    def requested(self, body: dict[str, Any]) -> MediaUnits:
        """The units a request may be billed for at most (the reservation's worst case)."""
        return MediaUnits()

    def units(self, request: dict[str, Any], answer: dict[str, Any] | None) -> MediaUnits:
        """The units an answer was billed for (`answer`: None when it was not JSON)."""
        return MediaUnits()

    def usage(self, answer: dict[str, Any]) -> Usage | None:
        """Token usage an answer reports (gpt-image-1, rerank servers), else None."""
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            return None
        prompt = usage.get("input_tokens", usage.get("prompt_tokens", usage.get("total_tokens")))
        output = usage.get("output_tokens", usage.get("completion_tokens", 0))
        if not isinstance(prompt, int) or not isinstance(output, int):
            return None
        return Usage(prompt, output, 0, prompt + output)


def _positive_int(body: dict[str, Any], name: str, default: int, top: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
        raise invalid(f'"{name}" must be an integer from 1 to {top}', name)
    return value


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise invalid(f'"{name}" is required and must be a non-empty string', name)
    return value


class ImagesInbound(MediaInbound):
    name = "openai-images"
    endpoint: Endpoint = "images"
    subject = "images are"
    path = "/images/generations"

    def check(self, body: dict[str, Any]) -> None:
        _text(body, "prompt")
        _positive_int(body, "n", 1, _MAX_N)

    def requested(self, body: dict[str, Any]) -> MediaUnits:
        return MediaUnits(images=_positive_int(body, "n", 1, _MAX_N))

    def units(self, request: dict[str, Any], answer: dict[str, Any] | None) -> MediaUnits:
        data = answer.get("data") if answer is not None else None
        count = len(data) if isinstance(data, list) else _positive_int(request, "n", 1, _MAX_N)
        return MediaUnits(images=count)


class TranscriptionsInbound(MediaInbound):
    name = "openai-audio-transcriptions"
    endpoint: Endpoint = "audio_transcriptions"
    subject = "audio transcriptions are"
    path = "/audio/transcriptions"
    upload = True

    def parse(self, raw: bytes) -> dict[str, Any]:
        raise invalid("expected a multipart/form-data upload")

    def parse_upload(self, raw: bytes, content_type: str | None) -> dict[str, Any]:
        form = parse_multipart(raw, content_type)
        body: dict[str, Any] = {FORM: form}
        has_file = False
        for part in form.parts:
            if part.name == "file":
                has_file = True
            elif part.name in _TEXT_FIELDS and part.name not in body:
                body[part.name] = part.value.decode("utf-8", "replace")
        if not body.get("model"):
            raise invalid('"model" is required and must be a non-empty string', "model")
        if not has_file:
            raise invalid('"file" is required', "file")
        return body

    def units(self, request: dict[str, Any], answer: dict[str, Any] | None) -> MediaUnits:
        if answer is None:
            return MediaUnits()
        seconds = answer.get("duration")
        usage = answer.get("usage")
        if isinstance(usage, dict) and usage.get("type") == "duration":
            seconds = usage.get("seconds", seconds)
        if isinstance(seconds, str):
            try:
                seconds = float(seconds)
            except ValueError:
                seconds = None
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
            return MediaUnits(audio_seconds=float(seconds))
        return MediaUnits()

    def usage(self, answer: dict[str, Any]) -> Usage | None:
        usage = answer.get("usage")
        if isinstance(usage, dict) and usage.get("type") == "duration":
            return None
        return super().usage(answer)


class TranslationsInbound(TranscriptionsInbound):
    name = "openai-audio-translations"
    endpoint: Endpoint = "audio_translations"
    subject = "audio translations are"
    path = "/audio/translations"


class SpeechInbound(MediaInbound):
    name = "openai-audio-speech"
    endpoint: Endpoint = "audio_speech"
    subject = "audio speech is"
    path = "/audio/speech"
    binary_stream = True

    def check(self, body: dict[str, Any]) -> None:
        _text(body, "input")
        if "voice" in body:
            _text(body, "voice")

    def requested(self, body: dict[str, Any]) -> MediaUnits:
        return MediaUnits(characters=len(body["input"]))

    def units(self, request: dict[str, Any], answer: dict[str, Any] | None) -> MediaUnits:
        return self.requested(request)


class ModerationsInbound(MediaInbound):
    name = "openai-moderations"
    endpoint: Endpoint = "moderations"
    subject = "moderations are"
    path = "/moderations"

    def parse(self, raw: bytes) -> dict[str, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise invalid("body is not valid JSON (UTF-8)") from None
        if not isinstance(body, dict):
            raise invalid("body must be a JSON object")
        if "model" not in body:
            body["model"] = "omni-moderation-latest"  # the API's default model, as an alias
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise invalid('"model" must be a non-empty string', "model")
        if not isinstance(body.get("input"), (str, list)) or not body["input"]:
            raise invalid('"input" is required (a string or an array)', "input")
        return body


class RerankInbound(MediaInbound):
    """Cohere/Jina rerank: `{model, query, documents, top_n}` → `{results: [{index,
    relevance_score}], …}`; served at `{base}/rerank` by OpenAI-compatible servers."""

    name = "rerank"
    endpoint: Endpoint = "rerank"
    subject = "rerank is"
    path = "/rerank"

    def check(self, body: dict[str, Any]) -> None:
        _text(body, "query")
        documents = body.get("documents")
        if not isinstance(documents, list) or not documents:
            raise invalid('"documents" is required and must be a non-empty array', "documents")
        if "top_n" in body:
            _positive_int(body, "top_n", 1, 1_000_000)

    def usage(self, answer: dict[str, Any]) -> Usage | None:
        usage = super().usage(answer)
        if usage is not None:
            return usage
        meta = answer.get("meta")
        billed = meta.get("billed_units") if isinstance(meta, dict) else None
        tokens = billed.get("input_tokens") if isinstance(billed, dict) else None
        return Usage(tokens, 0, 0, tokens) if isinstance(tokens, int) else None


IMAGES = ImagesInbound()
TRANSCRIPTIONS = TranscriptionsInbound()
TRANSLATIONS = TranslationsInbound()
SPEECH = SpeechInbound()
MODERATIONS = ModerationsInbound()
RERANK = RerankInbound()

#: route → codec, for the proxy's route table
MEDIA_ROUTES: dict[str, MediaInbound] = {
    "/v1/images/generations": IMAGES,
    "/v1/audio/transcriptions": TRANSCRIPTIONS,
    "/v1/audio/translations": TRANSLATIONS,
    "/v1/audio/speech": SPEECH,
    "/v1/moderations": MODERATIONS,
    "/v1/rerank": RERANK,
    "/v2/rerank": RERANK,  # the Cohere v2 client's path; the same shape
}
#: upstream path of each media endpoint (under the OpenAI base)
MEDIA_PATHS: dict[str, str] = {codec.endpoint: codec.path for codec in MEDIA_ROUTES.values()}
MEDIA_ENDPOINTS = frozenset(MEDIA_PATHS)


def media_body(body: dict[str, Any], model_name: str) -> tuple[bytes, str] | None:
    """(bytes, content type) of an upload re-encoded with `model` := model_name; None when
    `body` is not an upload."""
    form = body.get(FORM)
    if not isinstance(form, MultipartForm):
        return None
    return form.encode(model_name), form.content_type


def upload_content_type(body: dict[str, Any]) -> str | None:
    """The Content-Type of an upload's re-encoded body; None when `body` is not an upload."""
    form = body.get(FORM)
    return form.content_type if isinstance(form, MultipartForm) else None


__all__ = [
    "FORM",
    "MEDIA_ENDPOINTS",
    "MEDIA_PATHS",
    "MEDIA_ROUTES",
    "MediaInbound",
    "MultipartForm",
    "RawRelay",
    "media_body",
    "parse_multipart",
    "upload_content_type",
]
