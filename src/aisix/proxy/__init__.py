"""The proxy listener: caller-facing `/v1/*` API, the request pipeline and its helpers."""
