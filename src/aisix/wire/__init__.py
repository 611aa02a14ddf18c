"""Wire codecs: pure translation between each provider family's JSON/SSE and the canonical
structs of `aisix.wire.types`. Nothing here does I/O; the pipeline and the providers call it."""
