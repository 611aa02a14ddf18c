"""The real proxy pipeline in-process: `ProxyApp` over a `MockTransport`, for pipeline tests.

`Rig` builds what `aisix.app.Gateway` builds for the proxy listener, minus the sockets: a
snapshot compiled by `aisix.loader.build_snapshot` from records (an OpenAI and an Anthropic
provider key, a direct model on each, a failover alias across both families, caller keys with
concurrency limits and budgets), the real registry, router, health registry, governor on the
memory backend, a usage ledger on a real SQLite file and the event bus. Upstream calls go to
`Upstream`, a scripted `MockTransport` handler that answers each host (family) from a queue
of `MockResponse`s or with a default answer in that family's wire format. `Client` drives the
ASGI app and can hang up at a chosen moment (before the head, after n body messages).
`Rig.counters()` reads the memory backend, so a test can check every hold was finished.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from aisix.events import EventBus, RequestFinished
from aisix.limits.governor import Governor
from aisix.limits.memory import MemoryBackend
from aisix.loader import build_snapshot
from aisix.providers.base import UpstreamRequest
from aisix.providers.registry import Registry
from aisix.providers.transport import Transport
from aisix.proxy.client_ip import ClientIPResolver
from aisix.proxy.context import ProxyRuntime
from aisix.proxy.egress import Egress
from aisix.proxy.server import ProxyApp
from aisix.responses_store import ResponseStore
from aisix.routing.health import HealthRegistry
from aisix.routing.strategies import Router
from aisix.settings import Settings
from aisix.snapshot import Record, Snapshot, SnapshotHolder
from aisix.transport.mock import MockResponse, MockTransport
from aisix.usage import UsageStore

Message = MutableMapping[str, Any]
#: what uvicorn's httptools protocol refuses in a response header value
INVALID_HEADER_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
JSON = dict[str, Any]

OPENAI_HOST = "openai.test"
ANTHROPIC_HOST = "anthropic.test"
OPENAI_SECRET = "sk-openai-rig-secret-0123456789"
ANTHROPIC_SECRET = "sk-ant-rig-secret-0123456789"
#: aliases: one direct model per family, and a failover alias in each order
GPT, CLAUDE = "gpt-rig", "claude-rig"
GPT_FIRST, CLAUDE_FIRST = "gpt-then-claude", "claude-then-gpt"
#: caller keys: `CALLER` has a concurrency limit and a budget; `CLAMP` only a budget
CALLER, CLAMP = "sk-rig-caller", "sk-rig-clamp"
PRICING = {"input_per_million": 1.0, "output_per_million": 2.0}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def records(retries: int = 1, backoff_ms: int = 10) -> list[Record]:
    """The rig's resources; routing aliases retry each target `retries` times."""
    value: list[tuple[str, str, JSON]] = [
        (
            "provider_keys",
            "pk-openai",
            {
                "display_name": "openai-rig",
                "adapter": "openai",
                "secret": OPENAI_SECRET,
                "api_base": f"http://{OPENAI_HOST}/v1",
            },
        ),
        (
            "provider_keys",
            "pk-anthropic",
            {
                "display_name": "anthropic-rig",
                "adapter": "anthropic",
                "secret": ANTHROPIC_SECRET,
                "api_base": f"http://{ANTHROPIC_HOST}",
            },
        ),
    ]
    for model_id, alias, provider, upstream_name, key in (
        ("m-gpt", GPT, "openai", "gpt-4o", "pk-openai"),
        ("m-claude", CLAUDE, "anthropic", "claude-sonnet-4", "pk-anthropic"),
    ):
        model = {
            "display_name": alias,
            "provider": provider,
            "model_name": upstream_name,
            "provider_key_id": key,
            "pricing": PRICING,
            "rate_limit": {"concurrency": 10},
        }
        value.append(("models", model_id, model))
    for model_id, alias, order in (
        ("m-gpt-first", GPT_FIRST, [GPT, CLAUDE]),
        ("m-claude-first", CLAUDE_FIRST, [CLAUDE, GPT]),
    ):
        routing = {
            "strategy": "failover",
            "targets": [{"model": name} for name in order],
            "retries": retries,
            "retry_backoff_ms": backoff_ms,
        }
        value.append(("models", model_id, {"display_name": alias, "routing": routing}))
    value += [
        (
            "api_keys",
            "k-caller",
            {
                "key_hash": sha256(CALLER),
                "allowed_models": ["*"],
                "rate_limit": {"concurrency": 4, "tpm": 1_000_000},
                "budget": {"limit_usd": 100.0, "period": "day"},
            },
        ),
        (
            "api_keys",
            "k-clamp",
            {
                "key_hash": sha256(CLAMP),
                "allowed_models": ["*"],
                "budget": {"limit_usd": 1000.0, "period": "total"},
            },
        ),
        (
            "budget_policies",
            "b-openai",
            {
                "name": "openai-key-budget",
                "scope": "provider_key",
                "scope_ref": "pk-openai",
                "limit_usd": 50.0,
                "period": "day",
            },
        ),
    ]
    return [Record(kind, rid, body, 1) for kind, rid, body in value]


# --- upstream answers in each family's wire format ----------------------------------------


def openai_chat(text: str = "hello", prompt: Any = 5, completion: Any = 2) -> JSON:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    if isinstance(prompt, int) and isinstance(completion, int):
        usage["total_tokens"] = prompt + completion
    return {
        "id": "chatcmpl-rig",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def openai_stream(pieces: list[str], prompt: Any = 5, completion: Any = 2) -> list[bytes]:
    """SSE chunks: one per text piece, a finish chunk, a usage chunk, `[DONE]`."""

    def chunk(delta: JSON, finish: str | None = None, usage: JSON | None = None) -> bytes:
        choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
        body: JSON = {
            "id": "chatcmpl-rig",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o",
            "choices": choices,
        }
        if usage:
            body["usage"] = usage
        return b"data: " + orjson.dumps(body) + b"\n\n"

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": piece}) for piece in pieces]
    out.append(chunk({}, "stop"))
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    if isinstance(prompt, int) and isinstance(completion, int):
        usage["total_tokens"] = prompt + completion
    out.append(chunk({}, usage=usage))
    out.append(b"data: [DONE]\n\n")
    return out


def anthropic_message(text: str = "hello", prompt: Any = 5, completion: Any = 2) -> JSON:
    return {
        "id": "msg_rig",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    }


def sse_event(kind: str, data: JSON) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def anthropic_stream(pieces: list[str], prompt: Any = 5, completion: Any = 2) -> list[bytes]:
    start = anthropic_message("", prompt, 1)
    start["content"] = []
    start["stop_reason"] = None
    out = [
        sse_event("message_start", {"message": start}),
        sse_event(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        ),
    ]
    out += [
        sse_event(
            "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}}
        )
        for piece in pieces
    ]
    out.append(sse_event("content_block_stop", {"index": 0}))
    out.append(
        sse_event(
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": completion},
            },
        )
    )
    out.append(sse_event("message_stop", {}))
    return out


def json_reply(body: Any, status: int = 200, **kwargs: Any) -> MockResponse:
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return MockResponse(status, headers, orjson.dumps(body), **kwargs)


def sse_reply(chunks: list[bytes], **kwargs: Any) -> MockResponse:
    return MockResponse(200, {"content-type": "text/event-stream"}, chunks, **kwargs)


def server_error(status: int = 500, message: str = "upstream broke") -> MockResponse:
    return json_reply({"error": {"message": message, "type": "server_error"}}, status)


class Upstream:
    """The `MockTransport` handler: per host, scripted replies first, then the default."""

    def __init__(self) -> None:
        self.scripts: dict[str, deque[MockResponse | Callable[[], MockResponse]]] = {
            OPENAI_HOST: deque(),
            ANTHROPIC_HOST: deque(),
        }
        self.seen: list[UpstreamRequest] = []
        #: loop time at which each request arrived
        self.times: list[float] = []
        self._arrived = asyncio.Event()

    def script(self, host: str, *replies: MockResponse | Callable[[], MockResponse]) -> None:
        self.scripts[host].extend(replies)

    def hosts(self) -> list[str]:
        return [host_of(request) for request in self.seen]

    def bodies(self) -> list[JSON]:
        return [orjson.loads(request.body) for request in self.seen]

    async def wait_requests(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.seen) < count:
                self._arrived.clear()
                await self._arrived.wait()

    def __call__(self, request: UpstreamRequest) -> MockResponse:
        self.seen.append(request)
        self.times.append(asyncio.get_running_loop().time())
        self._arrived.set()
        host = host_of(request)
        queue = self.scripts[host]
        if queue:
            reply = queue.popleft()
            return reply() if callable(reply) else reply
        body = orjson.loads(request.body)
        stream = body.get("stream") is True
        if host == OPENAI_HOST:
            if stream:
                return sse_reply(openai_stream(["hel", "lo"]))
            return json_reply(openai_chat())
        if stream:
            return sse_reply(anthropic_stream(["hel", "lo"]))
        return json_reply(anthropic_message())


def host_of(request: UpstreamRequest) -> str:
    return request.url.split("/", 3)[2]


# --- the ASGI client ----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    #: every body message, in order (a stream's chunks)
    chunks: list[bytes] = field(default_factory=list)
    #: the app sent a final body message (more_body false)
    complete: bool = False

    def json(self) -> Any:
        return orjson.loads(self.body)

    def events(self) -> list[JSON]:
        """The JSON `data:` payloads of an SSE answer (`[DONE]` left out)."""
        out = []
        for line in self.body.split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                out.append(orjson.loads(line[6:]))
        return out


class Client:
    """Calls the app as uvicorn's httptools protocol does: `receive()` answers
    `http.disconnect` once the client left or the response completed; a message sent after
    the client left is dropped, one sent after the response completed (or with a control
    character in a header value, or carrying `refuse_header`) raises. `hang_up` (or
    `hang_up_after` body messages) is the client closing its socket."""

    def __init__(self, app: ProxyApp) -> None:
        self.app = app

    def post(self, path: str, body: JSON, **kwargs: Any) -> Awaitable[Reply]:
        return self.request("POST", path, body, **kwargs)

    async def request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        *,
        key: str = CALLER,
        headers: dict[str, str] | None = None,
        hang_up: asyncio.Event | None = None,
        hang_up_after: int | None = None,
        refuse_header: bytes | None = None,
    ) -> Reply:
        raw = orjson.dumps(body) if body is not None else b""
        sent = {"content-type": "application/json", "content-length": str(len(raw))}
        if key:  # key="" sends no Authorization header
            sent["authorization"] = f"Bearer {key}"
        sent.update(headers or {})
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in sent.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 3000),
        }
        gone = hang_up or asyncio.Event()
        done = asyncio.Event()  # the response is complete (uvicorn's `response_complete`)
        pending = [raw]
        messages: list[Message] = []

        async def receive() -> Message:
            if pending:
                return {"type": "http.request", "body": pending.pop(), "more_body": False}
            # uvicorn answers http.disconnect once the client left or the response completed
            waits = [asyncio.ensure_future(gone.wait()), asyncio.ensure_future(done.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if gone.is_set():
                return  # uvicorn drops what is sent after the client left
            if done.is_set():
                raise RuntimeError(f"{message['type']} sent after the response completed")
            for name, value in message.get("headers", ()):
                if INVALID_HEADER_VALUE.search(value) or name == refuse_header:
                    raise RuntimeError("Invalid HTTP header value.")  # as uvicorn refuses it
            messages.append(message)
            if message["type"] != "http.response.body":
                return
            if not message.get("more_body", False):
                done.set()
            bodies = sum(1 for m in messages if m["type"] == "http.response.body")
            if hang_up_after is not None and bodies >= hang_up_after:
                gone.set()

        await self.app(scope, receive, send)
        start = next((m for m in messages if m["type"] == "http.response.start"), None)
        chunks = [m.get("body", b"") for m in messages if m["type"] == "http.response.body"]
        complete = any(
            m["type"] == "http.response.body" and not m.get("more_body", False) for m in messages
        )
        if start is None:
            return Reply(0, {}, b"", chunks, complete)
        head = {k.decode(): v.decode() for k, v in start["headers"]}
        return Reply(start["status"], head, b"".join(chunks), chunks, complete)


# --- the rig --------------------------------------------------------------------------------


@dataclass
class Counters:
    """What the memory backend still holds: concurrency slots and reserved budget (nano-USD)
    across every bucket, and what was spent and counted."""

    slots: int
    reserved: int
    spent: int
    tokens: dict[str, int]


class Rig:
    def __init__(
        self,
        data_dir: Path,
        *,
        retries: int = 1,
        backoff_ms: int = 10,
        settings: JSON | None = None,
        extra: list[Record] | None = None,
    ) -> None:
        raw: JSON = {"admin": {"admin_keys": ["rig-admin-key-0123456789"]}, **(settings or {})}
        self.settings = Settings.model_validate(raw)
        self.upstream = Upstream()
        self.mock = MockTransport(self.upstream)
        self.transport = Transport(1000, client=self.mock)
        registry = Registry(send=self.mock.send)
        self.snapshot: Snapshot = build_snapshot(
            [*records(retries, backoff_ms), *(extra or [])], 1, None, registry.build_target
        )
        assert not self.snapshot.rejected, self.snapshot.rejected
        self.holder = SnapshotHolder()
        self.holder.publish(self.snapshot)
        self.health = HealthRegistry()
        self.backend = MemoryBackend()
        self.ledger = UsageStore(data_dir / "usage.db", flush_interval_s=0.05)
        self.governor = Governor(self.settings.ratelimit, self.backend, self.ledger)
        self.bus = EventBus()
        self.events: list[RequestFinished] = []
        self.bus.subscribe(self.events.append)
        self.bus.subscribe(self.ledger.on_event)
        self.responses = ResponseStore(None, ttl_s=3600, max_rows=100)
        egress = self.settings.upstream.proxy
        self.rt = ProxyRuntime(
            settings=self.settings,
            holder=self.holder,
            transport=self.transport,
            router=Router(self.health),
            health=self.health,
            governor=self.governor,
            bus=self.bus,
            client_ip=ClientIPResolver(self.settings.proxy.real_ip),
            responses=self.responses,
            egress=Egress(egress) if Egress.configured(egress) else None,
        )
        self.app = ProxyApp(self.rt)
        self.client = Client(self.app)

    async def __aenter__(self) -> Rig:
        await self.ledger.start()
        await self.responses.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.bus.flush()
        await self.responses.close()
        await self.ledger.close()

    def post(self, path: str, body: JSON, **kwargs: Any) -> Awaitable[Reply]:
        return self.client.request("POST", path, body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Awaitable[Reply]:
        return self.client.request("GET", path, **kwargs)

    def counters(self) -> Counters:
        """The memory backend's live state (read from its dicts: the test checks the real
        counters, not a summary the code under test computes)."""
        backend = self.backend
        slots = sum(len(members) for members in backend._slots.values())
        reserved = sum(state[2] for state in backend._spend.values())
        spent = sum(state[1] for state in backend._spend.values())
        tokens = {key: window[1] for key, window in backend._windows.items() if ":tokens." in key}
        return Counters(slots, reserved, spent, tokens)

    def event(self) -> RequestFinished:
        """The last request's `RequestFinished` (delivered now)."""
        self.bus.flush()
        assert self.events, "no request finished"
        return self.events[-1]


def chat(alias: str, stream: bool = False, text: str = "hi", **fields: Any) -> JSON:
    body: JSON = {"model": alias, "messages": [{"role": "user", "content": text}], **fields}
    if stream:
        body["stream"] = True
    return body


def messages(alias: str, stream: bool = False, text: str = "hi", **fields: Any) -> JSON:
    body: JSON = {
        "model": alias,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        **fields,
    }
    if stream:
        body["stream"] = True
    return body
