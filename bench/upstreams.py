"""Upstreams and side services that every target is measured against.

- nginx (not Python) with a generated config on a free loopback port: `POST /v1/chat/completions`
  returns the fixed chat.completion JSON, `POST /stream/v1/chat/completions` the fixed SSE body,
  `/gemini/v1beta/models/{m}:generateContent` and `:streamGenerateContent` Gemini's;
- the paced SSE upstream (bench/paced_upstream.py) for TTFT, chunk gaps and held streams;
- redis-server for the Redis counter variant.
Each start function returns the Managed process and its base URL, or raises StartError.
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fixtures import completion_json, gemini_json, gemini_sse_body, sse_body
from procs import Managed, ProcessGroup, free_port, wait_http

BENCH_DIR = Path(__file__).resolve().parent


class StartError(RuntimeError):
    """A process could not be started or did not become ready."""


@dataclass
class Upstream:
    """A started upstream: its process and root URL (`http://127.0.0.1:PORT`)."""

    managed: Managed
    root: str


def _nginx_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def nginx_config(workdir: Path, port: int) -> str:
    """The nginx.conf text: one worker, keep-alive without limits, three fixed locations."""
    temp = " ".join(
        f"{kind}_temp_path {workdir}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  {temp}
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /healthz {{ default_type text/plain; return 200 'ok'; }}
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 {_nginx_quote(completion_json())};
    }}
    location = /stream/v1/chat/completions {{
      default_type text/event-stream;
      return 200 {_nginx_quote(sse_body().decode())};
    }}
    location ~ ^/gemini/v1beta/models/[^/]+:generateContent$ {{
      default_type application/json;
      return 200 {_nginx_quote(gemini_json())};
    }}
    location ~ ^/gemini/v1beta/models/[^/]+:streamGenerateContent$ {{
      default_type text/event-stream;
      return 200 {_nginx_quote(gemini_sse_body().decode())};
    }}
  }}
}}
"""


def start_nginx(group: ProcessGroup, workdir: Path, cpus: str | None) -> Upstream:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise StartError("nginx not found (apt-get install -y nginx-light)")
    ngx_dir = workdir / "nginx"
    ngx_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = ngx_dir / "nginx.conf"
    conf.write_text(nginx_config(ngx_dir, port))
    argv = [nginx, "-p", str(ngx_dir), "-e", str(ngx_dir / "nginx-error.log"), "-c", str(conf)]
    managed = group.start("nginx", argv, cpus=cpus)
    root = f"http://127.0.0.1:{port}"
    if not wait_http(f"{root}/healthz", 10, alive=managed):
        raise StartError(f"nginx did not start: {managed.log_tail()}")
    return Upstream(managed, root)


def start_paced(group: ProcessGroup, cpus: str | None) -> Upstream:
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "paced_upstream.py"), "--port", str(port)]
    managed = group.start("paced-upstream", argv, cpus=cpus)
    root = f"http://127.0.0.1:{port}"
    if not wait_http(f"{root}/healthz", 15, alive=managed):
        raise StartError(f"paced upstream did not start: {managed.log_tail()}")
    return Upstream(managed, root)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(group: ProcessGroup, workdir: Path, cpus: str | None) -> tuple[Managed, str]:
    """Start redis-server without persistence; return it and its redis:// URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise StartError("redis-server not found (apt-get install -y redis-server)")
    port = free_port()
    redis_dir = workdir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(redis_dir),
        "--protected-mode",
        "no",
    ]
    managed = group.start("redis", argv, cpus=cpus)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _redis_ping(port):
            return managed, f"redis://127.0.0.1:{port}/0"
        if not managed.alive():
            break
        time.sleep(0.1)
    raise StartError(f"redis-server did not start: {managed.log_tail()}")
