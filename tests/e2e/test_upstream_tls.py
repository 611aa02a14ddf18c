"""Provider-key trust settings (contract §5.1 `tls`) through the gateway to an HTTPS upstream.

The fake upstream serves HTTPS with a certificate from a throwaway CA (trustme): the system
trust store refuses it (502, nothing served), `tls.ca_cert` with the CA's PEM accepts it, and
`tls.verify: false` accepts it without checks; the answer arrives intact over TLS, streamed too.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from e2e_helpers import ALIAS, CALLER_KEY, Gateway

from fakes.openai_upstream import FakeOpenAIUpstream

MESSAGES = [{"role": "user", "content": "over TLS"}]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https_upstream(ca: trustme.CA) -> Iterator[FakeOpenAIUpstream]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    fake = FakeOpenAIUpstream(tls=context).start()
    try:
        yield fake
    finally:
        fake.stop()


def seed(gw: Gateway, upstream: FakeOpenAIUpstream, alias: str, **key_fields: Any) -> None:
    provider_key = gw.create_provider_key(upstream.url, display_name=f"pk-{alias}", **key_fields)
    gw.create_model(alias, provider_key)


def test_provider_key_trust_settings_over_https(
    gateway: Any, https_upstream: FakeOpenAIUpstream, ca: trustme.CA
) -> None:
    assert https_upstream.url.startswith("https://")
    gw = gateway()
    seed(gw, https_upstream, ALIAS)  # system trust only
    seed(gw, https_upstream, "with-ca", tls={"ca_cert": ca.cert_pem.bytes().decode()})
    seed(gw, https_upstream, "unverified", tls={"verify": False})
    gw.create_api_key(CALLER_KEY, [ALIAS, "with-ca", "unverified"])
    gw.wait_for_key(CALLER_KEY, "unverified")

    refused = gw.proxy(
        "POST", "/v1/chat/completions", {"model": ALIAS, "messages": MESSAGES}, api_key=CALLER_KEY
    )
    assert refused.status == 502, refused.text
    assert "TLS handshake" in refused.json["error"]["message"]
    assert https_upstream.model_requests() == []

    client = gw.openai_client()
    for alias in ("with-ca", "unverified"):
        answer = client.chat.completions.create(model=alias, messages=MESSAGES)
        assert answer.model == alias
        assert answer.choices[0].message.content == "echo: over TLS"
        stream = client.chat.completions.create(model=alias, messages=MESSAGES, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "echo: over TLS"
    assert len(https_upstream.model_requests()) == 4
