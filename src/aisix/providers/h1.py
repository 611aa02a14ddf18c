"""Where the upstream HTTP/1.1 client used to live; it is now `aisix.transport.h1`.

Re-exports the names the pipeline's relay (and other older callers) import, so they keep
working until they move to `aisix.transport`.
"""

from aisix.transport.errors import ConnectError, ConnectionClosed
from aisix.transport.h1 import (
    HIGH_WATER,
    H1Transport,
    HTTPClientError,
    ProtocolError,
    Response,
    encode_request,
)

__all__ = [
    "HIGH_WATER",
    "ConnectError",
    "ConnectionClosed",
    "H1Transport",
    "HTTPClientError",
    "ProtocolError",
    "Response",
    "encode_request",
]
