"""The targets under test and how each is started, configured and stopped.

A Target is something that answers `POST .../chat/completions` (or `/v1/messages`) for four
kinds of traffic: `static` (nginx JSON), `sse` (nginx fixed stream), `paced` (paced stream for
TTFT and gaps) and `slow` (long paced stream for held streams); an adapter target (families.py)
has only `static` and `sse`. Starters: the direct upstream, the bare proxy, aisix (governance
off/on, memory or Redis counters, N workers, or one other wire family behind it) and LiteLLM's
proxy. A starter raises StartError with a reason; the orchestrator records it and moves on.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from families import Family
from fixtures import UPSTREAM_MODEL, request_body
from procs import Managed, ProcessGroup, free_port, wait_http
from upstreams import BENCH_DIR, StartError

REPO_DIR = BENCH_DIR.parent
# AISIX_BIN may point at another build (another checkout's venv) to compare branches
AISIX_BIN = Path(os.environ.get("AISIX_BIN", REPO_DIR / ".venv" / "bin" / "aisix"))
CALLER_KEY = "sk-bench-caller-0000000000000000"
ADMIN_KEY = "bench-admin-key-0123456789"
KINDS = ("static", "sse", "paced", "slow")
ALIASES = {
    "static": "bench-model",
    "sse": "bench-sse",
    "paced": "bench-paced",
    "slow": "bench-slow",
}
ROUTED_ALIAS = "bench-routed"
HUGE_LIMIT = {"rpm": 100_000_000, "tpm": 10_000_000_000}
PRICING = {"input_per_million": 2.5, "output_per_million": 10.0}


@dataclass(frozen=True)
class UpstreamBases:
    """api_base (ending in /v1) for each traffic kind, and nginx's root URL."""

    static: str
    sse: str
    paced: str
    slow: str
    nginx: str = ""

    def by_kind(self) -> dict[str, str]:
        return {"static": self.static, "sse": self.sse, "paced": self.paced, "slow": self.slow}


@dataclass
class Target:
    """A running target: where to send each kind, with which model and key."""

    name: str
    urls: dict[str, str]
    models: dict[str, str]
    key: str
    processes: list[Managed]
    info: dict[str, Any] = field(default_factory=dict)
    #: what the client reads back from a stream (bench/stream_probe.py --format)
    stream_format: str = "openai"

    @property
    def roots(self) -> list[int]:
        return [m.pid for m in self.processes]


def direct_target(bases: UpstreamBases, processes: list[Managed]) -> Target:
    """The floor: clients talk to the upstreams themselves."""
    urls = {kind: base + "/chat/completions" for kind, base in bases.by_kind().items()}
    return Target("direct", urls, dict.fromkeys(KINDS, UPSTREAM_MODEL), "upstream", processes)


def _proxy_target(name: str, port: int, processes: list[Managed], key: str) -> Target:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    return Target(name, dict.fromkeys(KINDS, url), dict(ALIASES), key, processes)


def exit_note(managed: Managed) -> str:
    code = managed.proc.poll()
    return "still running, not ready in time" if code is None else f"exited with status {code}"


def check_chat(
    url: str, model: str, key: str, timeout: float = 10.0, *, answer_field: str = "choices"
) -> str | None:
    """Send one request until it answers 200 with a non-empty `answer_field` (`choices` for
    chat, `content` for Messages); return None on success, else the last error
    (`"<status>: <body>"` for an HTTP error)."""
    body = request_body(model, stream=False).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    deadline = time.monotonic() + timeout
    error = "no attempt"
    while time.monotonic() < deadline:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                payload = json.loads(resp.read())
                if payload.get(answer_field):
                    return None
                error = f"200 without {answer_field}: {payload}"
        except urllib.error.HTTPError as exc:
            error = f"{exc.code}: {exc.read()[:300]!r}"
            if exc.code == 501:  # not implemented: final, waiting does not change it
                return error
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    return error


def start_bare(group: ProcessGroup, bases: UpstreamBases, cpus: str | None) -> Target:
    port = free_port()
    routes = {ALIASES[kind]: base for kind, base in bases.by_kind().items()}
    argv = [
        sys.executable,
        str(BENCH_DIR / "bare_proxy.py"),
        "--port",
        str(port),
        "--routes",
        json.dumps(routes),
        "--key",
        CALLER_KEY,
    ]
    managed = group.start("bare-proxy", argv, cpus=cpus)
    if not wait_http(f"http://127.0.0.1:{port}/readyz", 20, alive=managed):
        raise StartError(f"bare proxy did not start ({exit_note(managed)}): {managed.log_tail()}")
    target = _proxy_target("bare", port, [managed], CALLER_KEY)
    error = check_chat(target.urls["static"], ALIASES["static"], CALLER_KEY)
    if error:
        raise StartError(f"bare proxy does not answer: {error}")
    return target


@dataclass(frozen=True)
class AisixVariant:
    """How one aisix instance is configured."""

    name: str
    governance: bool
    redis_url: str | None = None
    workers: int = 1


def aisix_config(variant: AisixVariant, workdir: Path) -> tuple[dict[str, Any], int, int]:
    """Bootstrap config for a variant; returns (config, proxy port, admin port)."""
    port, admin_port, status_port = free_port(), free_port(), free_port()
    data_dir = workdir / f"aisix-{variant.name}-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "proxy": {"addr": f"127.0.0.1:{port}", "workers": variant.workers},
        "admin": {"addr": f"127.0.0.1:{admin_port}", "admin_keys": [ADMIN_KEY]},
        "data_dir": str(data_dir),
        "observability": {
            "log_level": "warning",
            "access_log": variant.governance,
            "metrics": {
                "prometheus": {"enabled": variant.governance, "addr": f"127.0.0.1:{status_port}"}
            },
        },
    }
    if variant.redis_url:
        config["ratelimit"] = {"backend": "redis", "redis": {"url": variant.redis_url}}
    return config, port, admin_port


def admin_post(admin: str, kind: str, value: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{admin}/admin/v1/{kind}",
        data=json.dumps(value).encode(),
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return 0, {"error_msg": f"{type(exc).__name__}: {exc}"}


def create_with_fallback(
    admin: str, kind: str, base: dict[str, Any], extras: dict[str, Any], notes: list[str]
) -> str:
    """POST base+extras; if refused, drop extras one by one (recording what did not land)."""
    attempt = {**base, **extras}
    last = "no attempt"
    for dropped in [None, *extras]:
        if dropped is not None:
            attempt.pop(dropped, None)
            notes.append(f"{kind}.{dropped} refused, measured without it")
        status, body = admin_post(admin, kind, attempt)
        if status in (200, 201):
            return str(body["id"])
        last = f"{status} {body.get('error_msg', body)}"
    raise StartError(f"admin POST /{kind} failed: {last}")


def create_caller_key(admin: str, governance: bool, notes: list[str]) -> None:
    """The caller key (stored as its SHA-256); with governance a huge rate limit and budget."""
    key_extras: dict[str, Any] = {}
    if governance:
        key_extras = {
            "rate_limit": HUGE_LIMIT,
            "budget": {"limit_usd": 1_000_000, "period": "month"},
        }
    key_hash = hashlib.sha256(CALLER_KEY.encode()).hexdigest()
    create_with_fallback(
        admin, "apikeys", {"key_hash": key_hash, "allowed_models": ["*"]}, key_extras, notes
    )


def provision_family(admin: str, nginx: str, family: Family) -> dict[str, Any]:
    """Governance as in aisix-gov, but `bench-model` and `bench-sse` on a provider key of the
    family's adapter whose api_base is nginx's fixed bodies of that family."""
    notes: list[str] = []
    limits = {"rate_limit": HUGE_LIMIT, "pricing": PRICING}
    key_ids: dict[str, str] = {}
    for kind, path in (("static", family.static_path), ("sse", family.sse_path)):
        if path not in key_ids:
            key_ids[path] = create_with_fallback(
                admin,
                "provider_keys",
                {
                    "display_name": f"bench-{family.wire}-{kind}",
                    "secret": family.secret,
                    "provider": family.provider,
                    "adapter": family.adapter,
                    "api_base": nginx + path,
                },
                {},
                notes,
            )
        model = {
            "display_name": ALIASES[kind],
            "provider": family.provider,
            "model_name": family.model_name,
            "provider_key_id": key_ids[path],
        }
        create_with_fallback(admin, "models", model, limits, notes)
    create_caller_key(admin, True, notes)
    return {
        "provision_notes": notes,
        "inbound": family.inbound,
        "adapter": family.adapter,
        "upstream_wire": family.wire,
    }


def provision_aisix(admin: str, bases: UpstreamBases, governance: bool) -> dict[str, Any]:
    """Create provider keys, models, the caller key and the routing alias; returns notes."""
    notes: list[str] = []
    limits = {"rate_limit": HUGE_LIMIT, "pricing": PRICING} if governance else {}
    key_ids: dict[str, str] = {}
    for kind, base in bases.by_kind().items():
        if base not in key_ids:
            key_ids[base] = create_with_fallback(
                admin,
                "provider_keys",
                {
                    "display_name": f"bench-{kind}",
                    "secret": "sk-upstream",
                    "provider": "openai",
                    "adapter": "openai",
                    "api_base": base,
                },
                {},
                notes,
            )
    models = [(alias, bases.by_kind()[kind]) for kind, alias in ALIASES.items()]
    models.append(("bench-model-2", bases.static))
    for alias, base in models:
        model = {
            "display_name": alias,
            "provider": "openai",
            "model_name": UPSTREAM_MODEL,
            "provider_key_id": key_ids[base],
        }
        create_with_fallback(admin, "models", model, limits, notes)
    create_caller_key(admin, governance, notes)
    routed = {
        "display_name": ROUTED_ALIAS,
        "routing": {
            "strategy": "failover",
            "targets": [{"model": "bench-model"}, {"model": "bench-model-2"}],
        },
    }
    status, body = admin_post(admin, "models", routed)
    routing = "ok" if status in (200, 201) else f"not available: {status} {body}"
    return {"provision_notes": notes, "routing_alias": routing}


def start_aisix(
    group: ProcessGroup,
    bases: UpstreamBases,
    variant: AisixVariant,
    workdir: Path,
    cpus: str | None,
    family: Family | None = None,
) -> Target:
    """Start aisix with `variant`'s config and provision it: the OpenAI models on nginx and
    the paced upstream, or, with `family`, that family's models on nginx only."""
    if not AISIX_BIN.exists():
        raise StartError(f"{AISIX_BIN} not found (pip install -e . in the repo venv)")
    config, port, admin_port = aisix_config(variant, workdir)
    config_path = workdir / f"aisix-{variant.name}.yaml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    managed = group.start(
        f"aisix-{variant.name}",
        [str(AISIX_BIN), "--config", str(config_path)],
        cpus=cpus,
        # the gateway reads AISIX_* variables as settings: AISIX_BIN is the harness's own
        drop_env=("AISIX_BIN",),
    )
    if not wait_http(f"http://127.0.0.1:{port}/readyz", 30, alive=managed):
        raise StartError(f"aisix did not become ready ({exit_note(managed)}): {managed.log_tail()}")
    admin = f"http://127.0.0.1:{admin_port}"
    if family is None:
        info = provision_aisix(admin, bases, variant.governance)
        target = _proxy_target(f"aisix-{variant.name}", port, [managed], CALLER_KEY)
    else:
        info = provision_family(admin, bases.nginx, family)
        url = f"http://127.0.0.1:{port}{family.client_path}"
        target = Target(
            family.target,
            {"static": url, "sse": url},
            {"static": ALIASES["static"], "sse": ALIASES["sse"]},
            CALLER_KEY,
            [managed],
            stream_format=family.client_format,
        )
    target.info.update(info, workers=variant.workers, config=config)
    answer = "content" if family is not None and family.inbound == "messages" else "choices"
    error = check_chat(target.urls["static"], ALIASES["static"], CALLER_KEY, answer_field=answer)
    if error and family is not None and error.startswith("501"):
        raise StartError(
            f"this gateway answers 501 for adapter {family.adapter!r} (not in this build): "
            f"{error[:200]}"
        )
    if error:
        raise StartError(f"aisix does not answer: {error}; log: {managed.log_tail(5)}")
    return target


def litellm_config(bases: UpstreamBases) -> dict[str, Any]:
    model_list = [
        {
            "model_name": ALIASES[kind],
            "litellm_params": {
                "model": f"openai/{UPSTREAM_MODEL}",
                "api_base": base,
                "api_key": "sk-upstream",
            },
        }
        for kind, base in bases.by_kind().items()
    ]
    return {
        "model_list": model_list,
        "general_settings": {"master_key": CALLER_KEY},
        "litellm_settings": {"set_verbose": False, "json_logs": False, "telemetry": False},
    }


def start_litellm(
    group: ProcessGroup, bases: UpstreamBases, venv: Path, workdir: Path, cpus: str | None
) -> Target:
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        raise StartError(f"{binary} missing (LiteLLM install failed)")
    port = free_port()
    config_path = workdir / "litellm.yaml"
    config_path.write_text(json.dumps(litellm_config(bases), indent=2))
    argv = [
        str(binary),
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "NO_DOCS": "True",
    }
    managed = group.start("litellm", argv, cpus=cpus, env=env, cwd=workdir)
    if not wait_http(f"http://127.0.0.1:{port}/health/liveliness", 120, alive=managed):
        raise StartError(f"LiteLLM did not start ({exit_note(managed)}): {managed.log_tail()}")
    target = _proxy_target("litellm", port, [managed], CALLER_KEY)
    error = check_chat(target.urls["static"], ALIASES["static"], CALLER_KEY, timeout=30)
    if error:
        raise StartError(f"LiteLLM does not answer chat: {error}")
    return target
