"""`/passthrough/{provider_key}/{path}`: raw relay through aisix to a fake OpenAI upstream.

GET and POST relayed with method, path and query; the provider's credential replaces the
caller's (whose key never reaches the upstream); the key's `strip_headers` and hop-by-hop
headers are dropped; a streamed answer arrives in pieces; upstream errors come back as sent;
permission (403), unknown keys (404) and the caller key's rate limit and budget apply; an
upload arriving in pieces reaches the upstream before it ends (chunked or with its length), is
bounded by `proxy.upload_body_limit_bytes`, and is read whole only to be signed (bedrock).
"""

from __future__ import annotations

import hashlib
import http.client
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
from e2e_helpers import PROVIDER_SECRET, Gateway, wait_for

from fakes.openai_upstream import FakeOpenAIUpstream, Reply

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "raw hello"}]}


def setup(gw: Gateway, fake: FakeOpenAIUpstream) -> str:
    pk = gw.create_provider_key(
        fake.url, strip_headers=["x-client-secret"], passthrough_price_usd=0.04
    )
    gw.create_model("m", pk)
    gw.create_api_key("sk-raw", ["m"], allow_passthrough=["openai-test"])
    gw.create_api_key("sk-any", ["m"], allow_passthrough=["*"])
    gw.create_api_key("sk-none", ["m"])
    gw.wait_for_key("sk-raw", "m")
    gw.wait_for_key("sk-none", "m")
    return pk


def test_passthrough_relays_raw_calls(gateway: Any, fake_openai: FakeOpenAIUpstream) -> None:
    gw = gateway()
    setup(gw, fake_openai)
    got = gw.proxy(
        "GET",
        "/passthrough/openai-test/models?limit=2",
        api_key="sk-raw",
        headers={"X-Client-Secret": "hush", "X-Custom": "kept", "Connection": "keep-alive"},
    )
    assert got.status == 200, got.text
    assert got.json["object"] == "list"
    sent = fake_openai.requests[-1]
    assert (sent.method, sent.path, sent.query) == ("GET", "/v1/models", "limit=2")
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_SECRET}"
    assert "sk-raw" not in str(sent.headers)  # the caller's key is never forwarded
    assert "x-client-secret" not in sent.headers  # the key's strip_headers
    assert sent.headers["x-custom"] == "kept"
    assert got.headers["x-aisix-request-id"]

    posted = gw.proxy(
        "POST",
        "/passthrough/openai-test/chat/completions",
        CHAT,
        headers={"x-api-key": "sk-raw"},
    )
    assert posted.status == 200, posted.text
    assert posted.json["choices"][0]["message"]["content"] == "echo: raw hello"
    assert posted.json["model"] == "gpt-4o"  # raw: nothing rewritten
    sent = fake_openai.requests[-1]
    assert sent.json == CHAT and sent.headers["authorization"] == f"Bearer {PROVIDER_SECRET}"
    assert "x-api-key" not in sent.headers

    # an upstream error comes back as the upstream sent it
    fake_openai.script(Reply.error(418, "teapot says no"))
    refused = gw.proxy("POST", "/passthrough/openai-test/chat/completions", CHAT, api_key="sk-raw")
    assert refused.status == 418 and refused.json["error"]["message"] == "teapot says no"


def test_passthrough_streams_the_answer(gateway: Any, fake_openai: FakeOpenAIUpstream) -> None:
    gw = gateway()
    setup(gw, fake_openai)
    fake_openai.chunks = 4
    fake_openai.default = Reply(chunk_delay_s=0.3)
    parts = urlsplit(gw.proxy_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    body = orjson.dumps({**CHAT, "stream": True})
    conn.request(
        "POST",
        "/passthrough/openai-test/chat/completions",
        body,
        {"Authorization": "Bearer sk-raw", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("content-type", "").startswith("text/event-stream")
    first = response.read1(65536)
    first_at = time.monotonic()
    assert first.startswith(b"data: ")  # the first event arrived before the stream ended
    rest = response.read()
    assert time.monotonic() - first_at > 0.5  # the rest took the upstream's pauses
    text = (first + rest).decode()
    assert text.rstrip().endswith("data: [DONE]")
    assert "echo" in text
    conn.close()


def test_passthrough_permission_unknown_keys_and_limits(
    gateway: Any, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway()
    setup(gw, fake_openai)
    none = gw.proxy("GET", "/passthrough/openai-test/models", api_key="sk-none")
    assert none.status == 403 and "passthrough" in none.json["error"]["message"]
    other = gw.proxy("GET", "/passthrough/someone-else/models", api_key="sk-raw")
    assert other.status == 403
    unknown = gw.proxy("GET", "/passthrough/someone-else/models", api_key="sk-any")
    assert unknown.status == 404 and "someone-else" in unknown.json["error"]["message"]
    anonymous = gw.proxy("GET", "/passthrough/openai-test/models")
    assert anonymous.status == 401
    assert len(fake_openai.requests) == 0

    limited_id = gw.create_api_key("sk-rpm", [], allow_passthrough=["*"], rate_limit={"rpm": 1})
    budget_id = gw.create_api_key(
        "sk-budget", [], allow_passthrough=["*"], budget={"limit_usd": 0.1, "period": "day"}
    )
    assert limited_id and budget_id

    def ready() -> bool:
        probe = gw.proxy("GET", "/passthrough/openai-test/models", api_key="sk-rpm")
        return probe.status == 200

    wait_for(ready, 3.0, "sk-rpm to work")
    again = gw.proxy("GET", "/passthrough/openai-test/models", api_key="sk-rpm")
    assert again.status == 429, again.text

    # 0.04 per call reserved and charged: two fit in 0.1, the third does not
    statuses = []
    for _ in range(3):
        statuses.append(
            gw.proxy(
                "POST", "/passthrough/openai-test/chat/completions", CHAT, api_key="sk-budget"
            ).status
        )
    assert statuses == [200, 200, 429]

    def spent() -> float | None:
        usage = gw.admin("GET", f"/apikeys/{budget_id}/usage").json
        return usage["budget"]["spent_usd"] if usage["requests"] == 2 else None

    wait_for(lambda: spent() == 0.08, 5.0, "passthrough spend")
    # the answers' OpenAI-shaped usage was read and counted against token limits
    usage = gw.admin("GET", f"/apikeys/{budget_id}/usage").json
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0, usage


def test_passthrough_to_bedrock_is_re_signed(gateway: Any) -> None:
    """A raw Converse call through a bedrock key: aisix signs the exact request it sends
    (the fake recomputes SigV4 from the known secret and refuses a bad signature)."""
    from fakes.bedrock_upstream import ACCESS_KEY, REGION, SECRET_KEY, FakeBedrock

    fake = FakeBedrock().start()
    try:
        gw: Gateway = gateway({"proxy": {"upload_body_limit_bytes": 64 * 1024}})
        secret = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "region": REGION}
        pk = gw.create(
            "provider_keys",
            {
                "display_name": "aws",
                "adapter": "bedrock",
                "provider": "bedrock",
                "secret": orjson.dumps(secret).decode(),
                "api_base": fake.url,
            },
        )
        model_id = "anthropic.claude-3-5-sonnet-20240620-v1:0"
        gw.create_model("claude-aws", pk, provider="bedrock", model_name=model_id)
        gw.create_api_key("sk-aws", ["claude-aws"], allow_passthrough=["aws"])
        gw.wait_for_key("sk-aws", "claude-aws")
        body = {"messages": [{"role": "user", "content": [{"text": "raw ping"}]}]}
        answer = gw.proxy(
            "POST",
            f"/passthrough/aws/model/{model_id}/converse",
            body,
            api_key="sk-aws",
            headers={"X-Custom": "signed too"},
        )
        assert answer.status == 200, answer.text
        assert answer.json["output"]["message"]["content"][0]["text"] == "echo: raw ping"
        [seen] = fake.requests
        assert seen.signature_ok and seen.json == body
        assert seen.headers["x-custom"] == "signed too"
        assert "sk-aws" not in str(seen.headers)

        # an upload in pieces is read whole to be signed (SigV4 covers the payload's hash)
        parts = urlsplit(gw.proxy_url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
        raw = orjson.dumps(body)

        def slowly() -> Iterator[bytes]:
            yield raw[:10]
            time.sleep(0.3)  # two reads for the gateway: the body arrives streamed
            yield raw[10:]

        conn.request(
            "POST",
            f"/passthrough/aws/model/{model_id}/converse",
            slowly(),
            {"Authorization": "Bearer sk-aws", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        streamed = orjson.loads(response.read())
        conn.close()
        assert response.status == 200, streamed
        assert streamed["output"]["message"]["content"][0]["text"] == "echo: raw ping"
        assert fake.requests[-1].signature_ok and fake.requests[-1].json == body

        # read whole to be signed, a streamed upload is still bounded: 413, nothing sent
        def oversized() -> Iterator[bytes]:
            for _ in range(4):
                yield b"x" * 32 * 1024
                time.sleep(0.05)

        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
        conn.request(
            "POST",
            f"/passthrough/aws/model/{model_id}/converse",
            oversized(),
            {"Authorization": "Bearer sk-aws"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        refused = orjson.loads(response.read())
        conn.close()
        assert response.status == 413, refused
        assert "limit" in refused["error"]["message"]
        assert len(fake.requests) == 2
    finally:
        fake.stop()


class UploadUpstream(socketserver.ThreadingTCPServer):
    """A raw HTTP/1.1 upstream that reads each request body piece by piece (chunked or
    Content-Length), sets `first_part` once some has arrived, and answers with its size and
    SHA-256."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _UploadHandler)
        self.first_part = threading.Event()
        self.heads: list[str] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _UploadHandler(socketserver.StreamRequestHandler):
    server: UploadUpstream

    def handle(self) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.rfile.readline()
            if not line:
                return
            head += line
        text = head.decode("latin-1").lower()
        self.server.heads.append(text)
        digest = hashlib.sha256()
        size = 0
        if "transfer-encoding: chunked" in text:
            while (length := int(self.rfile.readline().strip(), 16)) > 0:
                digest.update(self.rfile.read(length))
                size += length
                self.rfile.readline()
                self.server.first_part.set()
            self.rfile.readline()
        else:
            remaining = int(text.split("content-length: ")[1].split("\r\n")[0])
            while remaining:
                part = self.rfile.read1(remaining)
                if not part:
                    return
                digest.update(part)
                size += len(part)
                remaining -= len(part)
                self.server.first_part.set()
        body = orjson.dumps({"size": size, "sha256": digest.hexdigest()})
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )


def pieces(upstream: UploadUpstream, first: bytes, rest: bytes) -> Iterator[bytes]:
    """The client's upload: `first`, then `rest` only once the upstream has part of `first`
    (a gateway that buffered the body would never let it arrive)."""
    yield first
    assert upstream.first_part.wait(10), "the upstream got nothing before the upload ended"
    yield rest


def test_passthrough_streams_an_upload_as_it_arrives(gateway: Any) -> None:
    upstream = UploadUpstream()
    try:
        gw = gateway({"proxy": {"upload_body_limit_bytes": 4 * 1024 * 1024}})
        pk = gw.create_provider_key(upstream.url)
        gw.create_model("m", pk)
        gw.create_api_key("sk-up", ["m"], allow_passthrough=["openai-test"])
        gw.wait_for_key("sk-up", "m")
        parts = urlsplit(gw.proxy_url)
        first, rest = b"a" * 300_000, b"b" * 200_000
        whole = hashlib.sha256(first + rest).hexdigest()
        for framing in ("chunked", "length"):
            upstream.first_part.clear()
            headers = {"Authorization": "Bearer sk-up", "Content-Type": "application/octet-stream"}
            if framing == "length":
                headers["Content-Length"] = str(len(first) + len(rest))
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
            conn.request(
                "POST",
                "/passthrough/openai-test/files",
                pieces(upstream, first, rest),
                headers,
                encode_chunked=framing == "chunked",
            )
            response = conn.getresponse()
            got = orjson.loads(response.read())
            conn.close()
            assert response.status == 200, got
            assert got == {"size": 500_000, "sha256": whole}, framing
            sent = upstream.heads[-1]
            assert "authorization: bearer " + PROVIDER_SECRET.lower() in sent
            assert "sk-up" not in sent
            if framing == "chunked":
                assert "transfer-encoding: chunked" in sent
            else:
                assert "content-length: 500000" in sent

        # past the limit mid-upload: 413 in the OpenAI envelope, and the gateway stays up
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
        big = (b"c" * 1024 * 1024 for _ in range(6))
        try:
            conn.request(
                "POST",
                "/passthrough/openai-test/files",
                big,
                {"Authorization": "Bearer sk-up"},
                encode_chunked=True,
            )
            response = conn.getresponse()
            status, text = response.status, response.read()
        except (BrokenPipeError, ConnectionResetError):
            status, text = 0, b""  # the gateway may cut the upload off before we read
        conn.close()
        assert status in (413, 0), text
        if status:
            assert b"limit" in text
        assert gw.proxy("GET", "/v1/models", api_key="sk-up").status == 200
    finally:
        upstream.stop()
