"""The transport boundary: how an `UpstreamRequest` becomes bytes on a socket and back.

`base` is the one-method `AsyncTransport` protocol and the `UpstreamResponse` it returns;
`h1` implements it on our HTTP/1.1 client, `mock` in memory for pipeline tests; `errors` is
the typed failure tree and its single mapping to `GatewayError`s; `tls` caches one
`SSLContext` per trust setting; `proxy` picks and speaks to egress proxies.
"""
