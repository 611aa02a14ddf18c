"""The media codecs: multipart parsing and re-encoding, field checks, billable units, prices."""

from __future__ import annotations

import email.parser

import pytest

from aisix.errors import InvalidRequest, UpstreamDecodeError
from aisix.events import MediaUnits
from aisix.pricing import Estimate, cost_usd, media_cost_usd, worst_case_usd
from aisix.resources import Pricing
from aisix.wire.openai_media import (
    FORM,
    IMAGES,
    RERANK,
    SPEECH,
    TRANSCRIPTIONS,
    media_body,
)
from aisix.wire.types import Usage

CT = "multipart/form-data; boundary=XyZ"
FILE = b"RIFF\x00\x01--XyZnot-a-boundary\r\n\r\nbinary\r\n"


def upload(model: bytes = b"my-alias", extra: bytes = b"") -> bytes:
    return (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="model"\r\n\r\n' + model + b"\r\n"
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + FILE + b"\r\n" + extra + b"--XyZ--\r\n"
    )


def parts_of(content_type: str, body: bytes) -> dict[str, bytes]:
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    return {
        str(p.get_param("name", header="content-disposition")): p.get_payload(decode=True)  # type: ignore[misc,union-attr]
        for p in message.get_payload()
    }


def test_upload_model_is_rewritten_and_the_file_kept_byte_for_byte() -> None:
    extra = b'--XyZ\r\nContent-Disposition: form-data; name="language"\r\n\r\nen\r\n'
    body = TRANSCRIPTIONS.parse_upload(upload(extra=extra), CT)
    assert body["model"] == "my-alias" and body["language"] == "en"
    encoded = media_body(body, "whisper-1")
    assert encoded is not None
    raw, content_type = encoded
    assert content_type == "multipart/form-data; boundary=XyZ"
    parts = parts_of(content_type, raw)
    assert parts == {"model": b"whisper-1", "file": FILE, "language": b"en"}


@pytest.mark.parametrize(
    ("raw", "content_type", "message"),
    [
        (upload(), "application/json", "multipart/form-data"),
        (upload(), "multipart/form-data", "no boundary"),
        (upload()[:-9], CT, "no closing boundary"),
        (upload(model=b""), CT, '"model" is required'),
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n--XyZ--\r\n',
            CT,
            '"file" is required',
        ),
        (b"--XyZ\r\nno headers here--XyZ--\r\n", CT, "malformed"),
    ],
)
def test_bad_uploads_are_400(raw: bytes, content_type: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        TRANSCRIPTIONS.parse_upload(raw, content_type)


def test_json_media_checks_and_units() -> None:
    with pytest.raises(InvalidRequest, match='"prompt"'):
        IMAGES.parse(b'{"model": "m"}')
    with pytest.raises(InvalidRequest, match='"n"'):
        IMAGES.parse(b'{"model": "m", "prompt": "p", "n": 0}')
    images = IMAGES.parse(b'{"model": "m", "prompt": "p", "n": 3}')
    assert IMAGES.requested(images) == MediaUnits(images=3)
    answer = IMAGES.answer("application/json", b'{"data": [{}, {}]}', "alias", images)
    assert answer.units == MediaUnits(images=2) and answer.body == {"data": [{}, {}]}
    with pytest.raises(UpstreamDecodeError):
        IMAGES.answer("application/json", b"not json", "alias", images)
    speech = SPEECH.parse(b'{"model": "m", "input": "hello", "voice": "alloy"}')
    assert SPEECH.units(speech, None) == MediaUnits(characters=5)
    with pytest.raises(InvalidRequest, match='"documents"'):
        RERANK.parse(b'{"model": "m", "query": "q", "documents": []}')
    rerank = RERANK.answer(
        "application/json",
        b'{"model": "up", "results": [], "usage": {"total_tokens": 7}}',
        "alias",
        {},
    )
    assert rerank.body == {"model": "alias", "results": [], "usage": {"total_tokens": 7}}
    assert rerank.usage == Usage(7, 0, 0, 7)


def test_transcription_seconds_from_duration_or_usage() -> None:
    body = TRANSCRIPTIONS.parse_upload(upload(), CT)
    assert body[FORM].parts[1].value == FILE
    verbose = TRANSCRIPTIONS.answer("application/json", b'{"duration": 2.5}', "a", body)
    assert verbose.units == MediaUnits(audio_seconds=2.5)
    billed = b'{"text": "t", "usage": {"type": "duration", "seconds": 3}}'
    usage = TRANSCRIPTIONS.answer("application/json; charset=utf-8", billed, "a", body)
    assert usage.units == MediaUnits(audio_seconds=3.0) and usage.usage is None
    text = TRANSCRIPTIONS.answer("text/plain", b"hello", "a", body)
    assert text.raw == ("text/plain", b"hello") and text.units == MediaUnits()


def test_media_prices() -> None:
    pricing = Pricing(
        input_per_million=1.0,
        output_per_million=2.0,
        per_image=0.04,
        per_audio_second=0.0001,
        per_1k_characters=0.015,
        per_request=0.001,
    )
    units = MediaUnits(images=2, audio_seconds=10.0, characters=2000)
    assert media_cost_usd(pricing, units) == pytest.approx(0.08 + 0.001 + 0.03)
    assert media_cost_usd(None, units) == 0.0
    assert cost_usd(pricing, Usage(1_000_000, 0, 0, 1_000_000)) == pytest.approx(1.001)
    worst = worst_case_usd(pricing, Estimate(0, 0, MediaUnits(images=3)))
    assert worst == pytest.approx(0.12 + 0.001)
