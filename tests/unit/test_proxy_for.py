"""`proxy_for`: which egress proxy an upstream URL uses (settings, environment, NO_PROXY)."""

from __future__ import annotations

import pytest

from aisix.settings import ConfigError, UpstreamProxy, load_settings
from aisix.transport.errors import LocalProtocolError
from aisix.transport.proxy import bypasses, parse_proxy, proxy_for

ENV = {
    "HTTPS_PROXY": "http://secure-proxy:3128",
    "http_proxy": "plain-proxy:8080",
    "NO_PROXY": "localhost,.internal.example,10.0.0.0/8,[::1],svc:8443",
}


def test_opt_in_nothing_from_the_environment_by_default() -> None:
    assert proxy_for("https://api.openai.com/v1", UpstreamProxy(), ENV) is None


def test_from_env_picks_by_scheme_and_honours_no_proxy() -> None:
    settings = UpstreamProxy(from_env=True)
    assert proxy_for("https://api.openai.com/v1", settings, ENV) == "http://secure-proxy:3128"
    assert proxy_for("http://vllm:8000/v1", settings, ENV) == "http://plain-proxy:8080"
    for direct in (
        "https://localhost/v1",
        "https://llm.internal.example/v1",
        "https://internal.example/v1",
        "http://10.2.3.4:8000/v1",
        "http://[::1]:8000/v1",
        "https://svc:8443/v1",
    ):
        assert proxy_for(direct, settings, ENV) is None, direct
    assert proxy_for("https://svc:9443/v1", settings, ENV) == "http://secure-proxy:3128"
    assert proxy_for("https://notinternal.example/v1", settings, ENV) is not None


def test_explicit_url_wins_and_settings_no_proxy_adds_to_the_environment() -> None:
    settings = UpstreamProxy(from_env=True, url="http://corp:3128", no_proxy=["*.azure.com"])
    assert proxy_for("https://api.openai.com/v1", settings, ENV) == "http://corp:3128"
    assert proxy_for("https://x.openai.azure.com/v1", settings, ENV) is None
    assert proxy_for("https://localhost/v1", settings, ENV) is None  # from NO_PROXY
    only_url = UpstreamProxy(url="http://corp:3128")
    assert proxy_for("https://localhost/v1", only_url, ENV) == "http://corp:3128"


def test_all_proxy_fallback_star_and_unsupported_schemes() -> None:
    settings = UpstreamProxy(from_env=True)
    assert proxy_for("https://a.example/v1", settings, {"all_proxy": "p:1"}) == "http://p:1"
    assert (
        proxy_for("https://a.example/v1", settings, {"all_proxy": "p:1", "no_proxy": "*"}) is None
    )
    with pytest.raises(ValueError, match="only http://"):
        proxy_for("https://a.example/v1", settings, {"HTTPS_PROXY": "socks5://p:1080"})


def test_bypass_rules() -> None:
    assert bypasses("api.example.com", 443, ["example.com"])
    assert not bypasses("badexample.com", 443, ["example.com"])
    assert bypasses("192.168.1.5", 80, ["192.168.0.0/16"])
    assert not bypasses("192.169.1.5", 80, ["192.168.0.0/16"])
    assert bypasses("[::1]", 80, ["::1"])
    assert not bypasses("example.com", 443, ["", "  "])


def test_parse_proxy_builds_basic_credentials_and_rejects_bad_urls() -> None:
    parsed = parse_proxy("http://alice:s%40cret@proxy.corp:3128")
    assert (parsed.host, parsed.port) == ("proxy.corp", 3128)
    assert parsed.auth_line == b"Proxy-Authorization: Basic YWxpY2U6c0BjcmV0\r\n"
    assert parse_proxy("http://proxy.corp").port == 80
    assert parse_proxy("http://proxy.corp").auth_line == b""
    with pytest.raises(LocalProtocolError) as caught:
        parse_proxy("https://alice:topsecret@proxy.corp:3128")
    assert "topsecret" not in str(caught.value)


def test_proxy_settings_are_validated_and_read_from_the_environment() -> None:
    settings = load_settings(
        None,
        {
            "AISIX_ADMIN__ADMIN_KEYS": "k",
            "AISIX_UPSTREAM__PROXY__FROM_ENV": "true",
            "AISIX_UPSTREAM__PROXY__NO_PROXY": "a.example, b.example",
        },
    )
    assert settings.upstream.proxy.from_env
    assert settings.upstream.proxy.no_proxy == ["a.example", "b.example"]
    assert settings.upstream.max_response_bytes == 64 * 1024 * 1024
    assert settings.upstream.tcp_keepalive.idle_secs == 60
    for bad in ("https://p:1", "p:1", "http://p:notaport"):
        with pytest.raises(ConfigError, match=r"upstream.proxy.url: must be http://"):
            load_settings(None, {"AISIX_ADMIN__ADMIN_KEYS": "k", "AISIX_UPSTREAM__PROXY__URL": bad})
    with pytest.raises(ConfigError, match="client_key_file: requires client_cert_file"):
        load_settings(
            None, {"AISIX_ADMIN__ADMIN_KEYS": "k", "AISIX_UPSTREAM__TLS__CLIENT_KEY_FILE": "k.pem"}
        )
