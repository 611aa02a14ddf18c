"""EgressPolicy.check (issue 12 item 7): metadata addresses denied by default, allowlists."""

from __future__ import annotations

import pytest

from aisix.egress import DEFAULT_DENIED_CIDRS, EgressPolicy
from aisix.settings import load_settings

DEFAULT = EgressPolicy.build((), DEFAULT_DENIED_CIDRS)


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "[fd00:ec2::254]",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "fe80::1%eth0",
        "169.254.1.1",
    ],
)
def test_metadata_addresses_are_denied_by_default(host: str) -> None:
    reason = DEFAULT.check(host)
    assert reason is not None and "upstream.denied_cidrs" in reason


@pytest.mark.parametrize("host", ["127.0.0.1", "api.openai.com", "10.0.0.5", "[::1]"])
def test_other_hosts_are_allowed_by_default(host: str) -> None:
    assert DEFAULT.check(host) is None


def test_allowed_hosts_narrow_to_names_wildcards_and_networks() -> None:
    policy = EgressPolicy.build(
        ["api.openai.com", "*.openai.azure.com", "10.1.0.0/16", "169.254.169.254"],
        DEFAULT_DENIED_CIDRS,
    )
    assert policy.check("API.OpenAI.com.") is None
    assert policy.check("res.openai.azure.com") is None
    assert policy.check("10.1.2.3") is None
    for host in ("evil.com", "openai.azure.com.evil.com", "10.2.0.1", "127.0.0.1"):
        reason = policy.check(host)
        assert reason is not None and "upstream.allowed_hosts" in reason
    # a denied network wins over an allowlist entry
    assert policy.check("169.254.169.254") is not None


def test_settings_default_and_override() -> None:
    settings = load_settings(None, {"AISIX_ADMIN__ADMIN_KEYS": "k" * 16})
    assert tuple(settings.upstream.denied_cidrs) == DEFAULT_DENIED_CIDRS
    assert settings.upstream.allowed_hosts == []
    custom = load_settings(
        None,
        {
            "AISIX_ADMIN__ADMIN_KEYS": "k" * 16,
            "AISIX_UPSTREAM__DENIED_CIDRS": "[]",
            "AISIX_UPSTREAM__ALLOWED_HOSTS": '["api.openai.com"]',
        },
    )
    assert custom.upstream.denied_cidrs == [] and custom.upstream.allowed_hosts == [
        "api.openai.com"
    ]
