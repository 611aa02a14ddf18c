"""The upstream exchange of a non-stream media call (images, audio uploads, moderations,
rerank), whose answer may be JSON or not (`response_format: text`, `srt`, `vtt`).

One `AsyncTransport.send` under the model's total deadline; a non-2xx answer becomes the
contract's upstream error (the family's `parse_error` reads its body), a transport failure its
`GatewayError`. What a 2xx answer means is the media codec's business (`MediaInbound.answer`).
"""

from __future__ import annotations

from aisix.errors import upstream_status_error
from aisix.providers.base import UpstreamRequest
from aisix.providers.transport import FaultParser, Transport, parse_retry_after
from aisix.transport.errors import TransportError, gateway_error


async def send_media(
    transport: Transport, request: UpstreamRequest, timeout_ms: int, parse: FaultParser
) -> tuple[str, bytes]:
    """(content type, body) of the upstream's 2xx answer; raises the `GatewayError` to answer."""
    timeout = timeout_ms / 1000 if timeout_ms else None
    try:
        response = await transport.upstream.send(request, stream=False, timeout=timeout)
    except TransportError as exc:
        raise gateway_error(exc) from None
    raw = response.body()
    if response.status >= 300:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise upstream_status_error(response.status, raw, retry_after, parse)
    return response.headers.get("content-type") or "application/octet-stream", raw


__all__ = ["send_media"]
