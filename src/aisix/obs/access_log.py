"""The JSON access log (contract §12.2): one line per proxy request on stdout.

Lines are buffered and written once per event-loop turn, so a burst of requests costs one
write. The line holds identifiers, routing facts and token counts only: never bodies,
prompts, completions, caller keys, admin keys or provider secrets.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, BinaryIO

import orjson

from aisix.events import RequestFinished

_second_cache: list[Any] = [-1, ""]


def _ts(epoch: float) -> str:
    """RFC 3339 with milliseconds; the formatted second is reused within that second."""
    whole = int(epoch)
    if _second_cache[0] != whole:
        _second_cache[0] = whole
        _second_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second_cache[1]}.{int((epoch - whole) * 1000):03d}Z"


def access_record(event: RequestFinished) -> dict[str, Any]:
    usage = event.usage
    record: dict[str, Any] = {
        "ts": _ts(event.ts),
        "request_id": event.request_id,
        "method": event.method,
        "path": event.path,
        "status": event.status,
        "duration_ms": round(event.latency_ms, 3),
        "client_ip": event.client_ip,
        "api_key_id": event.api_key_id,
        "model": event.requested_model,
        "served_by": event.served_model,
        "provider": event.provider,
        "upstream_model": event.upstream_model,
        "stream": event.stream,
        "attempts": event.attempts,
        "is_fallback": event.is_fallback,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "total_tokens": usage.total_tokens if usage else None,
        "cost_usd": event.cost_usd,
    }
    if event.stream:
        record["ttft_ms"] = round(event.ttft_ms, 3) if event.ttft_ms is not None else None
    if event.error_type:
        record["error_type"] = event.error_type
        record["error_code"] = event.error_code
    if event.attempt_log:
        record["attempt_log"] = [
            {
                "model": a.served_model,
                "status": a.status,
                "latency_ms": round(a.latency_s * 1000, 3),
            }
            for a in event.attempt_log
        ]
    return record


class AccessLog:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream or sys.stdout.buffer
        self._pending: list[bytes] = []
        self._scheduled = False

    def on_request(self, event: RequestFinished) -> None:
        self._pending.append(orjson.dumps(access_record(event)) + b"\n")
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            self._stream.write(b"".join(lines))
            self._stream.flush()
        except (OSError, ValueError):
            pass
