"""AISIX drop-in (issue 14): an AISIX operator's config.yaml, the resources its control plane
wrote into etcd, its Grafana dashboard and its probes work unchanged against aisix.

Real etcd, real gateway subprocesses, fake OpenAI upstreams on real sockets, the official
`openai` SDK as the client.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import trustme
import yaml
from e2e_helpers import (
    ADMIN_KEY,
    ALIAS,
    CALLER_KEY,
    PROVIDER_SECRET,
    Gateway,
    GatewayFactory,
    deep_merge,
    http_request,
    sha256_hex,
    wait_for,
)

from fakes.aisix_config import full_aisix_config
from fakes.etcd_server import EtcdServer
from fakes.openai_upstream import FakeOpenAIUpstream, Reply

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "aisix.json"
CHAT = {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]}
INERT = (
    "accepted, no effect yet: cache, observability.metrics.otlp, observability.tracing, "
    "observability.metrics.buckets.guardrail_latency, managed, proxy.thread_per_core"
)


def aisix_gateway(
    gateway: GatewayFactory,
    port_factory: Callable[[], int],
    etcd: EtcdServer,
    prefix: str,
    extra: dict[str, Any] | None = None,
    *,
    start: bool = True,
) -> Gateway:
    """A gateway booted on the full AISIX config (every key of aisix-compat.md)."""
    config = full_aisix_config(
        proxy_addr=f"127.0.0.1:{port_factory()}",
        admin_addr=f"127.0.0.1:{port_factory()}",
        metrics_addr=f"127.0.0.1:{port_factory()}",
        etcd_endpoints=[etcd.url],
        prefix=prefix,
    )
    config["admin"]["admin_keys"] = [ADMIN_KEY]
    return gateway(deep_merge(config, extra or {}), start=start)


def put(etcd: EtcdServer, prefix: str, kind: str, resource_id: str, value: Any) -> None:
    etcd.put(f"{prefix}/{kind}/{resource_id}", orjson.dumps(value))


def seed_like_a_control_plane(etcd: EtcdServer, prefix: str, upstream: str) -> None:
    """Resources as a newer AISIX control plane writes them: no `adapter`, unknown fields."""
    put(etcd, prefix, "provider_keys", "pk-main", {
        "display_name": "openai-main", "provider": "openai", "secret": PROVIDER_SECRET,
        "api_base": upstream + "/v1", "labels": {"tier": "gold"},
    })  # fmt: skip
    put(etcd, prefix, "models", "m-main", {
        "display_name": ALIAS, "provider": "openai", "model_name": "gpt-4o",
        "provider_key_id": "pk-main", "guardrails": ["pii"],
        "pricing": {"input_per_million": 1.0, "output_per_million": 2.0},
    })  # fmt: skip
    put(etcd, prefix, "api_keys", "ak-main", {
        "key_hash": sha256_hex(CALLER_KEY), "allowed_models": ["*"],
        "budget": {"limit_usd": 100, "period": "month"}, "tags": ["billing"],
    })  # fmt: skip


def config_of(gw: Gateway) -> dict[str, Any]:
    response = gw.status("/status/config")
    assert response.status == 200, response.text
    body: dict[str, Any] = response.json
    return body


def test_full_aisix_config_boots_and_serves_etcd_resources_with_unknown_fields(
    gateway: GatewayFactory,
    port_factory: Callable[[], int],
    own_etcd: EtcdServer,
    prefix: str,
    fake_openai: FakeOpenAIUpstream,
) -> None:
    seed_like_a_control_plane(own_etcd, prefix, fake_openai.url)
    gw = aisix_gateway(gateway, port_factory, own_etcd, prefix)
    gw.wait_for_key(CALLER_KEY)
    assert gw.stderr_text().count(INERT) == 1, gw.stderr_text()

    raw = gw.openai_client().chat.completions.with_raw_response.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "Hello from AISIX."}],
        extra_headers={"x-aisix-request-id": "req-from-aisix-caller"},
    )
    assert raw.parse().choices[0].message.content == "echo: Hello from AISIX."
    assert raw.headers["x-aisix-request-id"] == "req-from-aisix-caller"
    assert fake_openai.model_requests()[-1].headers["authorization"] == f"Bearer {PROVIDER_SECRET}"

    # proxy.url_rewrites: the legacy path is rewritten before routing
    legacy = gw.proxy("POST", "/openai/v1/chat/completions", CHAT, api_key=CALLER_KEY)
    assert legacy.status == 200, legacy.text
    assert fake_openai.model_requests()[-1].path == "/v1/chat/completions"

    status = config_of(gw)
    assert status["state"] == "synced"
    assert status["source"]["type"] == "etcd" and status["source"]["connected"] is True
    assert status["applied"]["resource_counts"]["models"] == 1
    assert len(status["applied"]["config_hash"]) == 64 and status["last_failure"] is None
    assert status["rejected"] == []
    fields = {(p["kind"], p["field"], p["count"]) for p in status["partially_compatible"]}
    assert fields == {
        ("provider_keys", "labels", 1),
        ("models", "guardrails", 1),
        ("api_keys", "tags", 1),
    }
    assert gw.metric("aisix_config_partially_compatible_resources", kind="models") == 1

    # admin writes still refuse unknown fields (a person made a typo)
    typo = {"key_hash": "1" * 64, "allowed_models": [ALIAS], "tags": ["x"]}
    refused = gw.admin("POST", "/apikeys", typo)
    assert refused.status == 400 and refused.json["error_msg"] == 'unknown field "tags"'

    # probes on every listener, verbose too
    assert http_request("GET", gw.admin_url + "/readyz").text == "ok"
    verbose = http_request("GET", gw.proxy_url + "/livez?verbose")
    assert verbose.status == 200 and verbose.text.startswith("[+]ping ok\n")
    ready = http_request("GET", gw.admin_url + "/readyz?verbose")
    assert ready.status == 200 and "[+]config ok" in ready.text
    assert gw.status("/status/ready").text == "ok"


def test_validate_reports_the_inert_keys_and_a_typo(tmp_path: Path) -> None:
    config = full_aisix_config()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    ok = run_aisix("validate", "--config", str(path))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "ok" and INERT in ok.stderr
    config["observability"]["metrics"]["prometheus"]["adress"] = "x"
    path.write_text(yaml.safe_dump(config))
    bad = run_aisix("validate", "--config", str(path))
    assert bad.returncode == 1
    assert 'unknown key "observability.metrics.prometheus.adress"' in bad.stderr


def run_aisix(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AISIX_")}
    return subprocess.run(
        [sys.executable, "-m", "aisix", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


# --- the dashboard --------------------------------------------------------------------------


@pytest.fixture
def broken_upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream().start()
    fake.default = Reply.error(500)
    try:
        yield fake
    finally:
        fake.stop()


def dashboard_series() -> set[str]:
    document = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for panel in document["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"aisix_[a-z0-9_]+", target["expr"]):
                names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names


def exposed(gw: Gateway) -> dict[str, float]:
    """Per metric family (histograms by their `_count`): the sum of its samples."""
    text = gw.status("/metrics").text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        if name.endswith(("_bucket", "_sum")):
            continue
        family = name.removesuffix("_count")
        out[family] = out.get(family, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def test_every_series_of_the_aisix_dashboard_has_data_after_traffic(
    gateway: GatewayFactory,
    port_factory: Callable[[], int],
    own_etcd: EtcdServer,
    prefix: str,
    fake_openai: FakeOpenAIUpstream,
    broken_upstream: FakeOpenAIUpstream,
) -> None:
    seed_like_a_control_plane(own_etcd, prefix, fake_openai.url)
    put(own_etcd, prefix, "provider_keys", "pk-broken", {
        "display_name": "broken", "secret": "sk-broken", "provider": "openai",
        "api_base": broken_upstream.url + "/v1",
    })  # fmt: skip
    for name in ("broken-a", "broken-b", "broken-c"):
        put(own_etcd, prefix, "models", name, {
            "display_name": name, "provider": "openai", "model_name": "gpt-4o",
            "provider_key_id": "pk-broken", "retries": 0,
        })  # fmt: skip
    routing = {
        "all-broken": ["broken-a", "broken-b"],
        "with-fallback": ["broken-c", ALIAS],
    }
    for alias, targets in routing.items():
        put(own_etcd, prefix, "models", alias, {
            "display_name": alias, "routing": {"targets": [{"model": t} for t in targets]},
        })  # fmt: skip
    put(own_etcd, prefix, "models", "limited", {
        "display_name": "limited", "provider": "openai", "model_name": "gpt-4o",
        "provider_key_id": "pk-main", "rate_limit": {"rpm": 1},
    })  # fmt: skip
    gw = aisix_gateway(gateway, port_factory, own_etcd, prefix)
    gw.wait_for_key(CALLER_KEY)
    client = gw.openai_client()

    client.chat.completions.create(**CHAT)
    stream = client.chat.completions.create(
        **CHAT, stream=True, stream_options={"include_usage": True}
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: hi"
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(**{**CHAT, "model": "all-broken"})
    assert failed.value.status_code == 502
    served = client.chat.completions.create(**{**CHAT, "model": "with-fallback"})
    assert served.choices[0].message.content == "echo: hi"
    client.chat.completions.create(**{**CHAT, "model": "limited"})
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**{**CHAT, "model": "limited"})
    with pytest.raises(openai.AuthenticationError):
        gw.openai_client("sk-wrong").chat.completions.create(**CHAT)

    expected = dashboard_series()
    assert len(expected) >= 30

    def all_there() -> bool:
        return expected <= set(exposed(gw))

    wait_for(all_there, 5.0, "every dashboard series")
    values = exposed(gw)
    quiet = {  # series at 0 after this traffic, present so the panels show 0, not "no data"
        "aisix_usage_event_drops_total",
        "aisix_config_rejected_resources",
        "aisix_proxy_in_flight_requests",
    }
    for name in sorted(expected - quiet):
        assert values[name] > 0, f"{name} has no data"
    assert gw.metric("aisix_llm_tokens_by_client_total", client_type="openai-python") > 0
    assert gw.metric("aisix_routing_successful_fallbacks_total", model="with-fallback",
                     fallback_model=ALIAS) == 1  # fmt: skip
    assert gw.metric("aisix_proxy_requests_total", provider_key_name="openai-main") >= 3
    assert gw.metric("aisix_budget_limit_usd", api_key_id="ak-main") == 100
    assert gw.metric("aisix_deployment_state", model="broken-a", provider_key_id="pk-broken") == 1


# --- etcd down at boot, snapshot cache ------------------------------------------------------


def start_without_waiting_for_ready(gw: Gateway) -> None:
    """Start the subprocess and wait for liveness only (readiness is what the test checks)."""

    def alive() -> None:
        wait_for(lambda: _answers(gw.proxy_url + "/livez"), 20.0, "the proxy to listen")

    gw._wait_ready = alive
    gw.start()


def _answers(url: str) -> bool:
    try:
        return http_request("GET", url, timeout=1.0).status == 200
    except OSError:
        return False


def test_boot_with_etcd_down_serves_503_then_the_first_snapshot(
    gateway: GatewayFactory,
    port_factory: Callable[[], int],
    own_etcd: EtcdServer,
    prefix: str,
    fake_openai: FakeOpenAIUpstream,
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache" / "snapshot.json"
    own_etcd.stop()
    extra = {"managed": {"snapshot_cache_path": str(cache)}, "etcd": {"dial_timeout_ms": 300}}
    gw = aisix_gateway(gateway, port_factory, own_etcd, prefix, extra, start=False)
    start_without_waiting_for_ready(gw)

    ready = gw.status("/status/ready")
    assert (ready.status, ready.text) == (503, "never_loaded")
    assert gw.proxy("GET", "/readyz").status == 503
    assert config_of(gw)["state"] == "never_loaded"
    with pytest.raises(openai.APIStatusError) as caught:
        gw.openai_client().chat.completions.create(**CHAT)
    assert caught.value.status_code == 503
    assert caught.value.body["message"] == "gateway is not ready"  # type: ignore[index]
    assert not cache.exists()

    own_etcd.start()
    seed_like_a_control_plane(own_etcd, prefix, fake_openai.url)
    wait_for(lambda: gw.status("/status/ready").status == 200, 10.0, "the first snapshot")
    answer = gw.openai_client().chat.completions.create(**CHAT)
    assert answer.choices[0].message.content == "echo: hi"
    assert config_of(gw)["state"] == "synced"

    # the last good snapshot is on disk, owner-only (it holds provider secrets)
    wait_for(cache.exists, 5.0, "the snapshot cache")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    gw.stop()
    own_etcd.stop()

    # a restart during an etcd outage serves the cached snapshot at once
    gw.start()
    answer = gw.openai_client().chat.completions.create(**CHAT)
    assert answer.choices[0].message.content == "echo: hi"
    status = config_of(gw)
    assert status["state"] == "degraded" and status["source"]["serving_cache"] is True
    assert status["source"]["connected"] is False
    own_etcd.start()
    wait_for(lambda: config_of(gw)["state"] == "synced", 10.0, "the resync with etcd")
    assert config_of(gw)["source"]["serving_cache"] is False


# --- aisix export ---------------------------------------------------------------------------


def test_export_round_trip_through_a_resources_file(
    gateway: GatewayFactory,
    fake_openai: FakeOpenAIUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = gateway()
    seed = source.seed(fake_openai.url)
    second = source.create_model("gpt-4o-mini", seed.provider_key_id, model_name="gpt-4o-mini")
    source.create("models", {
        "display_name": "chat-prod",
        "routing": {"strategy": "round_robin", "targets": [{"model": ALIAS},
                                                           {"model": "gpt-4o-mini"}]},
    })  # fmt: skip
    source.create("budget_policies", {
        "name": "mini-budget", "scope": "model", "scope_ref": second, "limit_usd": 5,
        "period": "day",
    })  # fmt: skip
    exported, env_file = tmp_path / "resources.yaml", tmp_path / "secrets.env"
    result = run_aisix(
        "export", "--config", str(source.config_path), "--output", str(exported),
        "--env-file", str(env_file),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = exported.read_text()
    assert PROVIDER_SECRET not in text and "${PROVIDER_SECRET_OPENAI_TEST}" in text
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    secrets = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert secrets == {"PROVIDER_SECRET_OPENAI_TEST": PROVIDER_SECRET}

    checked = run_aisix("validate", "--resources", str(exported), env=secrets)
    assert (checked.returncode, checked.stdout.strip()) == (0, "ok"), checked.stderr
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    replica = gateway({"resources_file": str(exported)})
    replica.wait_for_key(CALLER_KEY)

    def values(gw: Gateway) -> dict[str, list[Any]]:
        """Every resource value, references by name (the file store mints its own ids)."""
        kinds = ("provider_keys", "models", "apikeys", "budget_policies")
        listed = {kind: gw.admin("GET", f"/{kind}").json["list"] for kind in kinds}
        names = {
            e["id"]: e["value"].get("display_name") or e["value"].get("name")
            for entries in listed.values()
            for e in entries
        }
        out: dict[str, list[Any]] = {}
        for kind, entries in listed.items():
            shown = []
            for entry in entries:
                value = dict(entry["value"])
                for ref in ("provider_key_id", "scope_ref"):
                    if ref in value:
                        value[ref] = names.get(value[ref], value[ref])
                shown.append(value)
            out[kind] = sorted(shown, key=lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
        return out

    before, after = values(source), values(replica)
    assert before["apikeys"][0].get("display_name") is None
    before["apikeys"][0]["display_name"] = seed.api_key_id  # the file format needs a name
    assert after == before
    assert len(after["models"]) == 3 and after["budget_policies"][0]["scope_ref"] == "gpt-4o-mini"
    answer = replica.openai_client().chat.completions.create(**CHAT)
    assert answer.choices[0].message.content == "echo: hi"
    assert fake_openai.model_requests()[-1].headers["authorization"] == f"Bearer {PROVIDER_SECRET}"


# --- listener options: idle keep-alive timeout, drain window, request-id headers ------------


def test_idle_timeout_drain_window_and_request_id_headers(
    gateway: GatewayFactory, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway({"downstream": {"idle_timeout_secs": 1}, "shutdown": {"min_drain_secs": 3}})
    gw.seed(fake_openai.url)
    both = {"x-request-id": "from-ingress", "x-aisix-request-id": "from-caller"}
    answered = gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=CALLER_KEY, headers=both)
    assert answered.headers["x-aisix-request-id"] == "from-caller"  # listed first, wins

    # downstream.idle_timeout_secs: an idle keep-alive connection is closed by the gateway
    with socket.create_connection((gw.proxy_host, gw.proxy_port), timeout=10) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: gw\r\n\r\n")
        received = b""
        while not received.endswith(b"\r\n0\r\n\r\n"):  # the whole (chunked) answer
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
        assert sock.recv(4096) == b""  # closed by the server, well within the 10 s timeout

    # shutdown.min_drain_secs: after SIGTERM /readyz says 503 while requests are still served
    assert gw.process is not None
    gw.process.send_signal(signal.SIGTERM)
    wait_for(lambda: gw.proxy("GET", "/readyz").status == 503, 2.0, "readyz to report draining")
    assert gw.proxy("GET", "/readyz").text == "draining"
    late = gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=CALLER_KEY)
    assert late.status == 200, late.text
    assert gw.stop() == 0


def test_request_id_from_configured_headers_only(
    gateway: GatewayFactory, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway({"proxy": {"request_id": {"accept_headers": ["x-correlation-id"]}}})
    gw.seed(fake_openai.url)
    headers = {"x-request-id": "not-this-one", "x-correlation-id": "corr-42"}
    answered = gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=CALLER_KEY, headers=headers)
    assert answered.headers["x-aisix-request-id"] == "corr-42"
    assert fake_openai.model_requests()[-1].headers["x-aisix-request-id"] == "corr-42"
    ignored = gw.proxy("GET", "/v1/models", api_key=CALLER_KEY, headers={"x-request-id": "nope"})
    assert ignored.headers["x-aisix-request-id"] != "nope"


# --- proxy.tls and admin.tls ---------------------------------------------------------------


def https_json(
    context: ssl.SSLContext, method: str, url: str, body: Any = None, key: str = ADMIN_KEY
) -> tuple[int, Any]:
    data = orjson.dumps(body) if body is not None else None
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        raw = response.read()
        return response.status, orjson.loads(raw) if raw.startswith(b"{") else raw


def test_proxy_and_admin_listeners_serve_tls(
    gateway: GatewayFactory, fake_openai: FakeOpenAIUpstream, tmp_path: Path
) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "listener.pem", tmp_path / "listener.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    tls = {"cert_file": str(cert), "key_file": str(key)}
    gw = gateway({"proxy": {"tls": tls}, "admin": {"tls": tls}}, start=False)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    proxy = f"https://{gw.proxy_host}:{gw.proxy_port}"
    admin = f"https://{gw.admin_host}:{gw.admin_port}"

    def ready() -> None:
        def answers() -> bool:
            try:
                return https_json(context, "GET", proxy + "/readyz")[0] == 200
            except OSError:
                return False

        wait_for(answers, 20.0, "the TLS proxy listener")

    gw._wait_ready = ready
    gw.start()
    status, created = https_json(context, "POST", admin + "/admin/v1/provider_keys", {
        "display_name": "tls-test", "secret": PROVIDER_SECRET, "api_base": fake_openai.url + "/v1",
    })  # fmt: skip
    assert status == 201
    https_json(context, "POST", admin + "/admin/v1/models", {
        "display_name": ALIAS, "provider": "openai", "model_name": "gpt-4o",
        "provider_key_id": created["id"],
    })  # fmt: skip
    https_json(context, "POST", admin + "/admin/v1/apikeys",
               {"key_hash": sha256_hex(CALLER_KEY), "allowed_models": [ALIAS]})  # fmt: skip
    client = openai.OpenAI(
        base_url=proxy + "/v1",
        api_key=CALLER_KEY,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=context, timeout=10),
    )

    def answered() -> bool:
        try:
            return bool(client.models.list().data)
        except openai.APIStatusError:
            return False

    wait_for(answered, 2.0, "the caller key over TLS")
    answer = client.chat.completions.create(**CHAT)
    assert answer.choices[0].message.content == "echo: hi"
    with pytest.raises(ssl.SSLError):  # the certificate really is the listener's: untrusted here
        ssl.create_default_context().wrap_socket(
            socket.create_connection((gw.proxy_host, gw.proxy_port), timeout=5),
            server_hostname="127.0.0.1",
        )
