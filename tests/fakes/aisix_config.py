"""An AISIX-shaped `config.yaml` using every bootstrap key of aisix-compat.md (issue 14).

`full_aisix_config(...)` returns the mapping an AISIX operator would bring, with the listener
addresses and the resource source filled in by the test; unit tests load it through
`load_settings`, the e2e test boots the gateway on it.
"""

from __future__ import annotations

from typing import Any


def full_aisix_config(
    proxy_addr: str = "127.0.0.1:3000",
    admin_addr: str = "127.0.0.1:3001",
    metrics_addr: str = "127.0.0.1:9090",
    etcd_endpoints: list[str] | None = None,
    prefix: str = "/aisix",
) -> dict[str, Any]:
    return {
        "etcd": {
            "endpoints": etcd_endpoints or ["http://127.0.0.1:2379"],
            "prefix": prefix,
            "env_id": "",
            "dial_timeout_ms": 5000,
            "request_timeout_ms": 5000,
        },
        "proxy": {
            "addr": proxy_addr,
            "request_body_limit_bytes": 0,
            "real_ip": {
                "trusted_proxies": ["127.0.0.1/32"],
                "recursive": True,
                "header": "x-forwarded-for",
            },
            "request_id": {"accept_headers": ["x-aisix-request-id", "x-request-id"]},
            "thread_per_core": True,
            "workers": 1,
            "url_rewrites": [
                {"name": "legacy-chat", "match": "^/openai/v1/(.*)$", "rewrite": "/v1/$1"}
            ],
        },
        "admin": {"enabled": True, "addr": admin_addr, "admin_keys": ["aisix-admin-key-for-tests"]},
        "observability": {
            "service_name": "aisix-edge",
            "log_level": "warn",
            "access_log": True,
            "metrics": {
                "prometheus": {"enabled": True, "path": "/metrics", "addr": metrics_addr},
                "otlp": {"enabled": False, "endpoint": "http://127.0.0.1:4317"},
                "client_type_rules": [{"pattern": "^py-billing-batcher/", "client": "billing"}],
                "buckets": {
                    "request_e2e_latency": [0.005, 0.05, 0.5, 5, 60],
                    "request_ttft": [0.05, 0.5, 5],
                    "guardrail_latency": [0.001, 0.01, 0.1],
                },
            },
            "tracing": {
                "otlp": {"enabled": False, "endpoint": "http://127.0.0.1:4317", "sample_ratio": 1.0}
            },
        },
        "cache": {"backend": "memory"},
        "ratelimit": {"backend": "memory", "concurrency_ttl_secs": 300},
        "upstream": {
            "timeout_ms": 6000000,
            "stream_timeout_ms": 0,
            "connect_timeout_ms": 5000,
            "tcp_keepalive_secs": 60,
            "tcp_keepalive_interval_secs": 30,
            "tcp_keepalive_retries": 5,
            "pool_idle_timeout_secs": 30,
            "pool_max_idle_per_host": 32,
            "retries": 2,
            "tls": {"verify": True},
        },
        "downstream": {"idle_timeout_secs": 0, "sse_keepalive_interval_secs": 15},
        "shutdown": {"min_drain_secs": 0},
        "managed": {"enabled": False},
    }
