"""Images, audio, moderations and rerank through aisix with the official openai SDK.

The fake OpenAI upstream serves each API (proved with the SDK directly first); through the
gateway the calls are authenticated, allowlisted, rate limited and budgeted like chat, the
upstream sees `model` rewritten to the model's `model_name` (also inside multipart uploads),
speech audio is relayed as binary chunks with the upstream's content type, and adapters
without the API answer 501 naming the adapter.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import wave
from typing import Any

import httpx
import openai
import pytest
from e2e_helpers import ALIAS, CALLER_KEY, UPSTREAM_MODEL, Gateway, http_request, wait_for

from fakes.openai_upstream import SPEECH_MAGIC, FakeOpenAIUpstream, Reply, form_fields


def small_wav(seconds: float = 1.5, rate: int = 8000) -> bytes:
    """A real mono 16-bit PCM WAV: a 440 Hz tone."""
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        frames = int(seconds * rate)
        audio.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                for i in range(frames)
            )
        )
    return out.getvalue()


def sdk(base_url: str, api_key: str = "sk-direct") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)


def test_fake_upstream_media_routes_with_the_sdk(fake_openai: FakeOpenAIUpstream) -> None:
    client = sdk(fake_openai.url + "/v1")
    images = client.images.generate(model="dall-e-3", prompt="a red fox", n=2)
    assert [d.url for d in images.data] == [  # type: ignore[union-attr]
        "https://fake.invalid/img/0.png",
        "https://fake.invalid/img/1.png",
    ]
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("tone.wav", small_wav(1.5), "audio/wav")
    )
    assert text.text == "fake transcript of 1.50s by whisper-1"
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="hi"
    ) as speech:
        assert speech.headers["content-type"] == "audio/mpeg"
        assert speech.read().startswith(SPEECH_MAGIC + b"hi#0;")
    moderation = client.moderations.create(model="omni-moderation-latest", input="kill it")
    assert moderation.results[0].flagged is True
    ranked = http_request(
        "POST",
        fake_openai.url + "/v1/rerank",
        json={"model": "rr", "query": "red fox", "documents": ["blue sky", "red fox"]},
    ).json
    assert [r["index"] for r in ranked["results"]] == [1, 0]


def test_media_apis_through_the_gateway(
    seeded: tuple[Gateway, Any], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    client = gw.openai_client()
    fake_openai.chunks = 4
    fake_openai.default = Reply(chunk_delay_s=0.05)

    images = client.images.generate(model=ALIAS, prompt="a red fox", n=3)
    assert len(images.data) == 3 and images.data[0].revised_prompt == "a red fox"
    sent = fake_openai.model_requests()[-1]
    assert sent.path == "/v1/images/generations" and sent.json["model"] == UPSTREAM_MODEL
    assert sent.headers["authorization"] == "Bearer sk-provider-secret-for-tests"

    transcript = client.audio.transcriptions.create(
        model=ALIAS, file=("tone.wav", small_wav(2.0), "audio/wav"), language="en"
    )
    assert transcript.text == f"fake transcript of 2.00s by {UPSTREAM_MODEL}"
    upload = fake_openai.model_requests()[-1]
    fields = form_fields(upload.headers["content-type"], upload.body)
    assert fields["model"] == UPSTREAM_MODEL.encode() and fields["language"] == b"en"
    assert fields["file"] == small_wav(2.0)  # the file bytes relayed untouched

    with warnings.catch_warnings():  # the SDK marks translations deprecated; it still calls
        warnings.simplefilter("ignore", DeprecationWarning)
        translated = client.audio.translations.create(
            model=ALIAS, file=("tone.wav", small_wav(1.0), "audio/wav"), response_format="text"
        )
    assert translated.strip() == f"fake transcript of 1.00s by {UPSTREAM_MODEL}"
    assert fake_openai.model_requests()[-1].path == "/v1/audio/translations"

    with client.audio.speech.with_streaming_response.create(
        model=ALIAS, voice="alloy", input="hello there", response_format="wav"
    ) as speech:
        assert speech.headers["content-type"] == "audio/wav"
        chunks = list(speech.iter_bytes())
    audio = b"".join(chunks)
    expected = b"".join(SPEECH_MAGIC + b"hello there#%d;" % i for i in range(4))
    assert audio == expected
    assert fake_openai.model_requests()[-1].json == {
        "model": UPSTREAM_MODEL,
        "voice": "alloy",
        "input": "hello there",
        "response_format": "wav",
    }

    moderation = client.moderations.create(model=ALIAS, input=["fine", "kill it"])
    assert [r.flagged for r in moderation.results] == [False, True]
    assert moderation.model == ALIAS

    ranked = gw.proxy(
        "POST",
        "/v1/rerank",
        {"model": ALIAS, "query": "red fox", "documents": ["blue sky", "a red fox"], "top_n": 1},
        api_key=CALLER_KEY,
    )
    assert ranked.status == 200, ranked.text
    assert ranked.json["results"][0]["index"] == 1 and len(ranked.json["results"]) == 1
    assert ranked.json["model"] == ALIAS
    assert fake_openai.model_requests()[-1].json["model"] == UPSTREAM_MODEL

    def units(endpoint: str, unit: str) -> float:
        return gw.metric("aisix_media_units_total", endpoint=endpoint, unit=unit)

    assert units("/v1/images/generations", "images") == 3
    assert units("/v1/audio/transcriptions", "audio_seconds") == 2  # usage.seconds
    assert units("/v1/audio/speech", "characters") == len("hello there")
    for endpoint in ("/v1/images/generations", "/v1/audio/speech", "/v1/rerank"):
        assert gw.metric("aisix_requests_total", endpoint=endpoint, status="200") >= 1

    # bad input: the OpenAI envelope, never a 500
    bad = gw.proxy("POST", "/v1/images/generations", {"model": ALIAS}, api_key=CALLER_KEY)
    assert bad.status == 400 and "prompt" in bad.json["error"]["message"]
    not_multipart = gw.proxy(
        "POST", "/v1/audio/transcriptions", {"model": ALIAS}, api_key=CALLER_KEY
    )
    assert not_multipart.status == 400
    assert "multipart/form-data" in not_multipart.json["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="no-such-model", prompt="x")


def test_upload_limit_413(gateway: Any, fake_openai: FakeOpenAIUpstream) -> None:
    gw = gateway({"proxy": {"upload_body_limit_bytes": 20_000}})
    gw.seed(fake_openai.url)
    client = gw.openai_client()
    client.audio.transcriptions.create(
        model=ALIAS, file=("a.wav", small_wav(0.5), "audio/wav")
    )  # 8 kB: fits
    with pytest.raises(openai.APIStatusError) as too_big:
        client.audio.transcriptions.create(model=ALIAS, file=("b.wav", small_wav(2.0)))
    assert too_big.value.status_code == 413
    assert "20000-byte limit" in str(too_big.value)


def test_media_limits_budget_and_unsupported_adapter(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway()
    pk = gw.create_provider_key(fake_openai.url)
    pricing = {
        "input_per_million": 0,
        "output_per_million": 0,
        "per_image": 0.04,
        "per_audio_second": 0.001,
        "per_request": 0.002,
    }
    gw.create_model("img", pk, pricing=pricing)
    anthropic_key = gw.create_provider_key(
        fake_openai.url, display_name="claude-key", adapter="anthropic", provider="anthropic"
    )
    gw.create_model("claude", anthropic_key, provider="anthropic", model_name="claude-x")
    gw.create_api_key("sk-rpm", ["img"], rate_limit={"rpm": 1})
    budget_id = gw.create_api_key(
        "sk-budget", ["img", "claude"], budget={"limit_usd": 0.2, "period": "day"}
    )
    gw.wait_for_key("sk-rpm", "img")
    gw.wait_for_key("sk-budget", "claude")

    limited = gw.openai_client("sk-rpm")
    limited.images.generate(model="img", prompt="one")
    with pytest.raises(openai.RateLimitError):
        limited.images.generate(model="img", prompt="two")

    budget = gw.openai_client("sk-budget")
    budget.images.generate(model="img", prompt="fox", n=2)  # 2 × 0.04 + 0.002
    budget.audio.transcriptions.create(model="img", file=("t.wav", small_wav(3.0)))

    def spent() -> float | None:
        usage = gw.admin("GET", f"/apikeys/{budget_id}/usage").json
        return usage["budget"]["spent_usd"] if usage["requests"] == 2 else None

    # whisper: `usage.seconds` = ceil(3.0) = 3 s × 0.001 + 0.002
    wait_for(lambda: spent() == pytest.approx(0.082 + 0.005), 5.0, "media spend")
    # the reservation counts the images asked for: 3 × 0.04 + 0.002 > 0.2 − 0.087
    with pytest.raises(openai.RateLimitError) as refused:
        budget.images.generate(model="img", prompt="fox", n=3)
    assert refused.value.code == "budget_exceeded"
    budget.images.generate(model="img", prompt="fox", n=1)  # 0.042 still fits

    with pytest.raises(openai.APIStatusError) as unsupported:
        budget.images.generate(model="claude", prompt="fox")
    assert unsupported.value.status_code == 501
    assert "images are not supported by the anthropic adapter" in str(unsupported.value)


def test_cohere_sdk_rerank_through_the_gateway(
    seeded: tuple[Gateway, Any], fake_openai: FakeOpenAIUpstream
) -> None:
    """The official Cohere SDK (`ClientV2.rerank`, POST /v2/rerank) against aisix."""
    import cohere

    gw, _ = seeded
    with httpx.Client(timeout=10) as http:  # ours, closed: the SDK never closes its own
        client = cohere.ClientV2(api_key=CALLER_KEY, base_url=gw.proxy_url, httpx_client=http)
        ranked = client.rerank(
            model=ALIAS,
            query="red fox",
            documents=["blue sky", "a red fox jumps", "red"],
            top_n=2,
        )
        assert [r.index for r in ranked.results] == [1, 2]
        assert ranked.results[0].relevance_score == 1.0
        sent = fake_openai.model_requests()[-1]
        assert sent.path == "/v1/rerank" and sent.json["model"] == UPSTREAM_MODEL
        assert sent.json["top_n"] == 2
        with pytest.raises(cohere.core.api_error.ApiError) as refused:
            cohere.ClientV2(api_key="sk-wrong", base_url=gw.proxy_url, httpx_client=http).rerank(
                model=ALIAS, query="q", documents=["d"]
            )
        assert refused.value.status_code == 401


def test_speech_stream_gets_no_sse_keepalive(gateway: Any, fake_openai: FakeOpenAIUpstream) -> None:
    """Binary audio is relayed byte for byte: the SSE `: ping` keepalive never lands in it."""
    gw = gateway({"downstream": {"sse_keepalive_interval_secs": 1}})
    gw.seed(fake_openai.url)
    fake_openai.chunks = 2
    fake_openai.default = Reply(chunk_delay_s=2.5)  # a gap longer than the keepalive interval
    with gw.openai_client().audio.speech.with_streaming_response.create(
        model=ALIAS, voice="alloy", input="slow"
    ) as speech:
        audio = speech.read()
    assert audio == SPEECH_MAGIC + b"slow#0;" + SPEECH_MAGIC + b"slow#1;"
