"""The bench's nginx (bench/upstreams.py, a real nginx process) serves each family's fixed
bodies at the URLs the gateway's providers build from the adapter rows' provider keys
(bench/families.py): Anthropic Messages JSON and SSE, Bedrock Converse JSON and the binary
ConverseStream frames (a POST, SigV4-signed by the provider), Gemini's paths, and each
family's fixed stream for the direct floor, byte for byte with the right content type."""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import fixtures  # noqa: E402
from aisix.providers import anthropic, bedrock  # noqa: E402
from aisix.providers.base import TLSConfig, UpstreamCall, UpstreamRequest  # noqa: E402
from aisix.resources import DirectModel, ProviderKey  # noqa: E402
from aisix.wire.openai_in import CHAT  # noqa: E402
from families import FAMILIES, FIXED_STREAMS  # noqa: E402
from procs import ProcessGroup  # noqa: E402
from upstreams import start_nginx  # noqa: E402

JSON = "application/json"
SSE = "text/event-stream"
FRAMES = "application/vnd.amazon.eventstream"


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("bench-nginx")
    group = ProcessGroup(workdir)
    try:
        upstream = start_nginx(group, workdir, None)
        assert upstream.missing == {}
        yield upstream.root
    finally:
        group.stop_all()


def post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read()


def send(request: UpstreamRequest) -> tuple[int, str, bytes]:
    return post(request.url, request.headers, request.body)


def provider_key(nginx: str, name: str, kind: str) -> tuple[ProviderKey, DirectModel]:
    family = FAMILIES[name]
    path = family.static_path if kind == "static" else family.sse_path
    key = ProviderKey(
        display_name=f"bench-{family.wire}-{kind}",
        secret=family.secret,
        provider=family.provider,
        adapter=family.adapter,  # type: ignore[arg-type]
        api_base=nginx + path,
    )
    model = DirectModel(
        display_name="bench-model",
        provider=family.provider,
        model_name=family.model_name,
        provider_key_id="k",
    )
    return key, model


def canonical(stream: bool) -> UpstreamCall:
    body = orjson.loads(fixtures.request_body("bench-model", stream=stream))
    return UpstreamCall("chat", stream, "r", canonical=CHAT.to_canonical(body))


@pytest.mark.parametrize(
    ("kind", "stream", "content_type", "expected"),
    [
        ("static", False, JSON, fixtures.anthropic_json().encode()),
        ("sse", True, SSE, fixtures.anthropic_sse_body()),
    ],
)
def test_anthropic_native_and_translated(
    nginx: str, kind: str, stream: bool, content_type: str, expected: bytes
) -> None:
    for name in ("aisix-anthropic-native", "aisix-anthropic"):
        key, model = provider_key(nginx, name, kind)
        provider = anthropic.build_provider(key, model, TLSConfig())
        if FAMILIES[name].inbound == "messages":
            body = orjson.loads(fixtures.request_body("bench-model", stream=stream))
            call = UpstreamCall("messages", stream, "r", body=body)
        else:
            call = canonical(stream)
        request = asyncio.run(provider.authorize(provider.build(call)))
        assert send(request) == (200, content_type, expected)


@pytest.mark.parametrize(
    ("stream", "content_type", "expected"),
    [
        (False, JSON, fixtures.bedrock_json().encode()),
        (True, FRAMES, fixtures.bedrock_stream_body()),
    ],
)
def test_bedrock_converse_and_stream(
    nginx: str, stream: bool, content_type: str, expected: bytes
) -> None:
    key, model = provider_key(nginx, "aisix-bedrock", "sse" if stream else "static")
    provider = bedrock.build_provider(key, model, TLSConfig())
    request = asyncio.run(provider.authorize(provider.build(canonical(stream))))
    assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")
    # keep-alive connections see the same bytes each time (the 405 → 200 internal redirect)
    assert send(request) == send(request) == (200, content_type, expected)


def test_gemini_paths(nginx: str) -> None:
    root = nginx + FAMILIES["aisix-gemini"].static_path
    url = f"{root}/v1beta/models/{fixtures.GEMINI_MODEL}:generateContent"
    body = b"{}"
    assert post(url, {"x-goog-api-key": "k"}, body) == (200, JSON, fixtures.gemini_json().encode())
    stream = nginx + FIXED_STREAMS["gemini"]
    assert stream.startswith(root)
    assert post(stream, {}, body) == (200, SSE, fixtures.gemini_sse_body())


@pytest.mark.parametrize(
    ("wire", "content_type", "expected"),
    [
        ("openai", SSE, fixtures.sse_body()),
        ("anthropic", SSE, fixtures.anthropic_sse_body()),
        ("gemini", SSE, fixtures.gemini_sse_body()),
        ("bedrock", FRAMES, fixtures.bedrock_stream_body()),
    ],
)
def test_direct_floor_streams(nginx: str, wire: str, content_type: str, expected: bytes) -> None:
    assert post(nginx + FIXED_STREAMS[wire], {}, b"{}") == (200, content_type, expected)
