"""AISIX-compatible observability pieces (issue 14): probes, client types, the status shape,
the AISIX metric series, the snapshot cache and the upstream connection options."""

from __future__ import annotations

import asyncio
import ssl
import stat
import time
from pathlib import Path

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from aisix.events import AttemptFinished, RequestFinished, Usage
from aisix.loader import build_snapshot
from aisix.obs.client_type import MEMO_LIMIT, ClientTypeClassifier
from aisix.obs.config_status import ConfigStatus
from aisix.obs.health import livez, readyz
from aisix.obs.metrics import Metrics
from aisix.providers.base import TLSConfig
from aisix.providers.registry import Registry
from aisix.providers.transport import Transport
from aisix.settings import MetricsSettings, UpstreamSettings
from aisix.settings_compat import ClientTypeRule
from aisix.snapshot import Record, SnapshotHolder
from aisix.store.file import FileStore
from aisix.store.snapshot_cache import read_cache, write_cache
from aisix.store.supervisor import Supervisor
from aisix.transport.errors import ConnectError
from aisix.transport.h1 import H1Transport
from aisix.transport.tls import context_for


def test_probe_answers_plain_and_verbose() -> None:
    assert livez(False, False) == (200, b"ok")
    assert livez(True, False) == (503, b"draining")
    assert livez(False, True) == (200, b"[+]ping ok\n[+]shutdown ok\nlivez check passed\n")
    assert readyz(False, True, False) == (200, b"ok")
    assert readyz(False, False, False) == (503, b"never_loaded")
    assert readyz(True, True, False) == (503, b"draining")
    status, body = readyz(False, False, True)
    assert status == 503 and b"[-]config failed: never_loaded\n" in body
    assert body.endswith(b"readyz check failed\n")


def test_client_types_rules_first_then_builtins() -> None:
    rules = [ClientTypeRule(pattern="^py-billing/", client="billing")]
    classify = ClientTypeClassifier(rules).classify
    assert classify("py-billing/2.0 python-requests/2.31") == "billing"
    assert classify("OpenAI/Python 1.30.1") == "openai-python"
    assert classify("claude-cli/1.0.3 (external, cli)") == "claude-code"
    assert classify("opencode/0.3 ai-sdk/provider-utils/2.0") == "opencode"
    assert classify("curl/8.4.0") == "curl"
    assert classify("SomethingBespoke/9") == "other"
    assert classify(None) == "unknown" and classify("   ") == "unknown"


def test_client_type_memo_is_bounded() -> None:
    classifier = ClientTypeClassifier()
    for n in range(MEMO_LIMIT + 50):
        assert classifier.classify(f"bot-{n}/1") == "other"
    assert len(classifier._memo) == MEMO_LIMIT


def event(**fields: object) -> RequestFinished:
    base: dict[str, object] = dict(
        event_id="e", request_id="r", ts=time.time(), endpoint="/v1/chat/completions",
        method="POST", path="/v1/chat/completions", stream=True, status=200,
        outcome="success", latency_ms=120.0, client_ip="10.0.0.1", api_key_id="ak",
        requested_model="prod", model_id="m1", served_model="prod", provider="openai",
        provider_key_id="pk", upstream_model="gpt-4o", usage=Usage(10, 5, 0, 15),
        cost_usd=0.002, ttft_ms=40.0, user_agent="OpenAI/Python 1.2",
        attempt_log=[AttemptFinished("m1", "prod", "openai", 200, 0.1, None, False)],
    )  # fmt: skip
    base.update(fields)
    return RequestFinished(**base)  # type: ignore[arg-type]


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    got: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **want: str
) -> float:
    return sum(
        v for (n, labels), v in got.items() if n == name and want.items() <= dict(labels).items()
    )


def test_aisix_series_carry_aisix_labels_and_configured_buckets() -> None:
    records = [
        Record("provider_keys", "pk", {"display_name": "main-key", "secret": "s"}, 1),
        Record("models", "m1", {"display_name": "prod", "provider": "openai",
                                "model_name": "gpt-4o", "provider_key_id": "pk"}, 1),
    ]  # fmt: skip
    holder = SnapshotHolder()
    holder.publish(build_snapshot(records, 1))
    settings = MetricsSettings.model_validate({"buckets": {"request_e2e_latency": [0.1, 1]}})
    m = Metrics(settings, holder, env_id="prod-eu")
    m.on_request(event())
    m.on_request(event())
    failed = AttemptFinished("m1", "prod", "openai", 500, 0.2, "x", False)
    m.on_request(
        event(status=502, outcome="upstream_error", served_model=None, attempt_log=[failed])
    )
    got = samples(m)
    assert value(got, "aisix_proxy_requests_total", provider_key_name="main-key", model="prod",
                 inbound_protocol="openai", stream="true", status="200") == 2  # fmt: skip
    assert value(got, "aisix_proxy_failed_requests_total", status="502") == 1
    assert value(got, "aisix_llm_requests_total", upstream_model="gpt-4o", status="500") == 1
    assert value(got, "aisix_deployment_success_responses_total", provider_key_id="pk") == 2
    assert value(got, "aisix_deployment_failure_responses_total", model="prod") == 1
    assert value(got, "aisix_llm_tokens_by_client_total", client_type="openai-python",
                 token_type="total") == 30  # fmt: skip
    assert value(got, "aisix_llm_input_tokens_total", api_key_id="ak") == 20
    assert value(got, "aisix_request_e2e_latency_seconds_bucket", env_id="prod-eu", le="0.1") == 0
    assert value(got, "aisix_request_e2e_latency_seconds_bucket", le="1.0") == 3
    assert value(got, "aisix_request_ttft_seconds_count", streaming="true") == 2
    assert value(got, "aisix_requests_total", model="prod", provider="openai") == 3  # kept


def test_snapshot_cache_round_trip_is_owner_only(tmp_path: Path) -> None:
    records = [Record("provider_keys", "pk", {"display_name": "k", "secret": "sk-x"}, 4)]
    snapshot = build_snapshot(records, 42)
    path = tmp_path / "cache" / "snap.json"
    write_cache(path, snapshot, "http://etcd:2379/aisix")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_cache(path, "http://etcd:2379/aisix") == (records, 42)
    assert read_cache(path, "http://other:2379/aisix") is None  # another source's cache
    assert read_cache(tmp_path / "missing.json", "x") is None
    path.write_text("{not json")
    assert read_cache(path, "http://etcd:2379/aisix") is None


def test_config_status_states(tmp_path: Path) -> None:
    resources = tmp_path / "resources.yaml"
    resources.write_text('_format_version: "1"\n')

    async def scenario() -> list[str]:
        store = FileStore(resources, {})
        holder = SnapshotHolder()
        supervisor = Supervisor(store, holder, lambda pk, model: None)
        status = ConfigStatus(supervisor, store, holder)
        supervisor._on_reload = status.on_reload
        states = [status.state()]
        await store.open()
        await supervisor.start()
        states.append(status.state())
        resources.write_text(
            '_format_version: "1"\nprovider_keys: [{display_name: k, secret: s}]\n'
        )
        await store.reload()
        await supervisor.reload()
        states.append(status.state())
        body = status.render()
        assert body["applied"]["apply_seq"] == 2 and len(body["applied"]["config_hash"]) == 64
        supervisor.record_failure("resources file is invalid")
        states.append(status.state())
        assert status.render()["last_failure"]["last_error"] == "resources file is invalid"
        await supervisor.stop()
        return states

    assert asyncio.run(scenario()) == ["never_loaded", "empty", "synced", "out_of_sync"]


def test_upstream_tls_context_from_settings(tmp_path: Path) -> None:
    assert Registry(UpstreamSettings().tls).base_tls == TLSConfig()
    ca = trustme.CA()
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("gateway.client")
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    tls = {"ca_file": "ca.pem", "client_cert_file": "c.pem", "client_key_file": "k.pem"}
    custom = UpstreamSettings.model_validate({"tls": tls})
    registry = Registry(custom.tls, lambda name: tmp_path / name)
    context = context_for(registry.base_tls)
    assert context.verify_mode == ssl.CERT_REQUIRED
    baseline = len(ssl.create_default_context().get_ca_certs())
    assert len(context.get_ca_certs()) == baseline + 1  # added to the system store
    insecure = Registry(UpstreamSettings.model_validate({"tls": {"verify": False}}).tls)
    assert context_for(insecure.base_tls).verify_mode == ssl.CERT_NONE
    missing = UpstreamSettings.model_validate({"tls": {"ca_file": str(tmp_path / "no.pem")}})
    with pytest.raises(ConnectError, match="not found"):
        context_for(Registry(missing.tls).base_tls)
    swapped = UpstreamSettings.model_validate(
        {"tls": {"client_cert_file": str(key_file), "client_key_file": str(ca_file)}}
    )
    with pytest.raises(ConnectError, match="cannot be loaded"):
        context_for(Registry(swapped.tls).base_tls)


def test_tcp_keepalive_and_idle_cap_reach_the_transport() -> None:
    upstream = UpstreamSettings.model_validate(
        {
            "tcp_keepalive_secs": 45,
            "tcp_keepalive_interval_secs": 7,
            "tcp_keepalive_retries": 3,
            "pool_max_idle_per_host": 4,
        }
    )
    client = Transport.from_settings(upstream).upstream
    assert isinstance(client, H1Transport)
    assert client._keepalive_options == (45, 7, 3)
    assert client.max_idle_per_host == 4
    off = Transport.from_settings(UpstreamSettings.model_validate({"tcp_keepalive_secs": 0}))
    assert isinstance(off.upstream, H1Transport) and off.upstream._keepalive_options is None
