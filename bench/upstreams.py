"""Upstreams and side services that every target is measured against.

- nginx (not Python) with a generated config on a free loopback port: `POST /v1/chat/completions`
  returns the fixed chat.completion JSON, `POST /stream/v1/chat/completions` the fixed SSE body,
  and the same answer in the other families: Anthropic Messages under `/anthropic` (JSON) and
  `/anthropic-stream` (SSE), Gemini under `/gemini`, Bedrock Converse under `/bedrock` (the
  ConverseStream frames from a binary file written at start);
- the paced SSE upstream (bench/paced_upstream.py) for TTFT, chunk gaps and held streams;
- redis-server for the Redis counter variant.
Each start function returns the Managed process and its base URL, or raises StartError.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fixtures import (
    anthropic_json,
    anthropic_sse_body,
    bedrock_json,
    bedrock_stream_body,
    completion_json,
    gemini_json,
    gemini_sse_body,
    sse_body,
)
from procs import Managed, ProcessGroup, free_port, wait_http

BENCH_DIR = Path(__file__).resolve().parent


class StartError(RuntimeError):
    """A process could not be started or did not become ready."""


@dataclass
class Upstream:
    """A started upstream: its process and root URL (`http://127.0.0.1:PORT`)."""

    managed: Managed
    root: str
    #: wire family -> why nginx cannot serve its fixed bodies (none missing normally)
    missing: dict[str, str] = field(default_factory=dict)


def _nginx_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


#: the ConverseStream frames nginx serves, written into its directory at start
BEDROCK_FRAMES = "bedrock-converse-stream.bin"


def _json_location(match: str, body: str) -> str:
    return f"location {match} {{ default_type application/json; return 200 {_nginx_quote(body)}; }}"


def _sse_location(match: str, body: bytes) -> str:
    return (
        f"location {match} {{ default_type text/event-stream; "
        f"return 200 {_nginx_quote(body.decode())}; }}"
    )


def nginx_config(workdir: Path, port: int) -> str:
    """The nginx.conf text: one worker, keep-alive without limits, fixed locations per family.

    `return` cannot carry the binary event-stream (NUL bytes, `$`), and nginx's static module
    answers 405 to a POST, so the ConverseStream location turns its own 405 into a 200 with the
    frame file (`error_page` to an internal location, which nginx serves as a GET)."""
    temp = " ".join(
        f"{kind}_temp_path {workdir}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # started as root, nginx runs its workers as `nobody`, who cannot read the frame file in
    # a private work directory: keep them as root (loopback only, like the whole harness)
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
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
    {_json_location("= /anthropic/v1/messages", anthropic_json())}
    {_sse_location("= /anthropic-stream/v1/messages", anthropic_sse_body())}
    {_json_location("~ ^/gemini/v1beta/models/[^/]+:generateContent$", gemini_json())}
    {_sse_location("~ ^/gemini/v1beta/models/[^/]+:streamGenerateContent$", gemini_sse_body())}
    {_json_location("~ ^/bedrock/model/[^/]+/converse$", bedrock_json())}
    location ~ ^/bedrock/model/[^/]+/converse-stream$ {{
      error_page 405 =200 /_bedrock_frames;
      return 405;
    }}
    location = /_bedrock_frames {{
      internal;
      default_type application/vnd.amazon.eventstream;
      alias {workdir / BEDROCK_FRAMES};
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
    missing: dict[str, str] = {}
    try:
        (ngx_dir / BEDROCK_FRAMES).write_bytes(bedrock_stream_body())
    except ImportError as exc:  # the Bedrock row is skipped with this reason
        missing["bedrock"] = f"cannot encode the ConverseStream frames: {exc}"
    conf = ngx_dir / "nginx.conf"
    conf.write_text(nginx_config(ngx_dir, port))
    argv = [nginx, "-p", str(ngx_dir), "-e", str(ngx_dir / "nginx-error.log"), "-c", str(conf)]
    managed = group.start("nginx", argv, cpus=cpus)
    root = f"http://127.0.0.1:{port}"
    if not wait_http(f"{root}/healthz", 10, alive=managed):
        raise StartError(f"nginx did not start: {managed.log_tail()}")
    return Upstream(managed, root, missing)


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
