"""End-to-end helpers: run `aisix` as a subprocess on free ports and talk to it over HTTP only.

`Gateway` writes a temporary config.yaml (proxy/admin/status on 127.0.0.1, `data_dir` in the
test's tmp_path, admin key `test-admin-key-0123456789`, overrides deep-merged in), starts
`python -m aisix --config <file>`, waits for `/readyz` with a deadline, and offers small sync
HTTP helpers (urllib), a raw-socket sender for oversized or malformed requests, access-log
parsing, restart/stop, and `seed()` for the contract's caller-key walkthrough.
"""

from __future__ import annotations

import copy
import hashlib
import http.client
import io
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import openai
import orjson
import pytest
import yaml

from fakes.azure_upstream import EntraSetup, FakeAzureOpenAI, FakeEntraID
from fakes.openai_upstream import FakeOpenAIUpstream

_METRIC_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')

ADMIN_KEY = "test-admin-key-0123456789"
CALLER_KEY = "sk-app-caller"
PROVIDER_SECRET = "sk-provider-secret-for-tests"
ALIAS = "gpt-4o-prod"
UPSTREAM_MODEL = "gpt-4o"
STARTUP_DEADLINE_S = 20.0


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 5.0,
    message: str = "condition",
    every: float = 0.02,
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(every)


# ---------------------------------------------------------------------------------------------
# HTTP helpers
# ---------------------------------------------------------------------------------------------


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # names lowercased
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def sse_data(self) -> list[str]:
        """The `data:` payloads of an SSE body, in order (comments and other fields skipped)."""
        out: list[str] = []
        for event in self.text.replace("\r\n", "\n").split("\n\n"):
            lines = [ln[5:].lstrip(" ") for ln in event.split("\n") if ln.startswith("data:")]
            if lines:
                out.append("\n".join(lines))
        return out


def _lower_headers(items: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def http_request(
    method: str,
    url: str,
    *,
    json: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> HttpResponse:
    """One request with urllib; 4xx/5xx are returned, not raised."""
    all_headers = dict(headers or {})
    if json is not None:
        data = orjson.dumps(json)
        all_headers.setdefault("Content-Type", "application/json")
    elif data is not None:
        all_headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            try:
                body = resp.read()
            except http.client.IncompleteRead as err:  # e.g. a stream the server cut short
                body = err.partial
            return HttpResponse(resp.status, _lower_headers(resp.headers.items()), body)
    except urllib.error.HTTPError as err:
        return HttpResponse(err.code, _lower_headers(err.headers.items()), err.read())


class _BytesSocket:
    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)

    def makefile(self, *args: Any, **kwargs: Any) -> io.BytesIO:
        return self._file


def parse_raw_response(raw: bytes) -> HttpResponse:
    response = http.client.HTTPResponse(_BytesSocket(raw))  # type: ignore[arg-type]
    response.begin()
    try:
        body = response.read()
    except http.client.IncompleteRead as err:
        body = err.partial
    return HttpResponse(response.status, _lower_headers(response.getheaders()), body)


def send_raw(
    host: str, port: int, head: bytes, body: bytes = b"", timeout: float = 30.0
) -> HttpResponse:
    """Send a hand-built request and read the answer, even if the server answers (and closes)
    before the body has been sent, as a server rejecting an oversized body may do."""
    deadline = time.monotonic() + timeout
    received = bytearray()
    payload = memoryview(head + body)
    sent = 0
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setblocking(False)
        while time.monotonic() < deadline:
            want_write = [sock] if sent < len(payload) else []
            readable, writable, _ = select.select([sock], want_write, [], 0.5)
            if readable:
                try:
                    chunk = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    chunk = b""
                if not chunk:
                    break
                received.extend(chunk)
                if _complete(bytes(received)):
                    break
                continue
            if writable:
                try:
                    sent += sock.send(payload[sent : sent + 262144])
                except (BrokenPipeError, ConnectionResetError):
                    sent = len(payload)  # the server stopped reading; collect its answer
    if not received:
        raise AssertionError("no HTTP response received")
    return parse_raw_response(bytes(received))


def _complete(raw: bytes) -> bool:
    """True once a full response with a Content-Length (or a final chunk) has arrived."""
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head = raw[:head_end].decode("latin-1").lower()
    rest = raw[head_end + 4 :]
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            return len(rest) >= int(line.split(":", 1)[1])
    if "transfer-encoding: chunked" in head:
        return rest.endswith(b"0\r\n\r\n")
    return False


def raise_fd_limit(wanted: int = 8192) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# ---------------------------------------------------------------------------------------------
# Gateway process
# ---------------------------------------------------------------------------------------------


@dataclass
class Seed:
    """Ids and credentials created by `Gateway.seed()`."""

    provider_key_id: str
    model_id: str
    api_key_id: str
    caller_key: str = CALLER_KEY
    provider_secret: str = PROVIDER_SECRET
    alias: str = ALIAS
    upstream_model: str = UPSTREAM_MODEL


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


class Gateway:
    """One `aisix` subprocess with its own config, data dir and log files."""

    _counter = 0
    command: ClassVar[list[str]] = [sys.executable, "-m", "aisix"]

    def __init__(
        self, tmp_path: Path, port_factory: Callable[[], int], overrides: dict[str, Any] | None
    ) -> None:
        Gateway._counter += 1
        self.dir = tmp_path / f"gateway-{Gateway._counter}"
        self.dir.mkdir(parents=True)
        base = {
            "proxy": {"addr": f"127.0.0.1:{port_factory()}", "shutdown_grace_secs": 5},
            "admin": {"addr": f"127.0.0.1:{port_factory()}", "admin_keys": [ADMIN_KEY]},
            "data_dir": str(self.dir / "data"),
            "observability": {"metrics": {"prometheus": {"addr": f"127.0.0.1:{port_factory()}"}}},
        }
        self.config = deep_merge(base, overrides or {})
        self.config_path = self.dir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.proxy_host, self.proxy_port = _split_addr(self.config["proxy"]["addr"])
        self.admin_host, self.admin_port = _split_addr(self.config["admin"]["addr"])
        prom = self.config["observability"]["metrics"]["prometheus"]
        self.status_host, self.status_port = _split_addr(prom["addr"])
        self.admin_enabled = self.config["admin"].get("enabled", True) is not False
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stdout_path = self.dir / "stdout.log"
        self.stderr_path = self.dir / "stderr.log"

    # -- addresses -------------------------------------------------------------------------

    @property
    def proxy_url(self) -> str:
        return f"http://{self.proxy_host}:{self.proxy_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_host}:{self.admin_port}"

    @property
    def status_url(self) -> str:
        return f"http://{self.status_host}:{self.status_port}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Gateway:
        assert self.process is None, "gateway already running"
        raise_fd_limit()  # inherited by the gateway; the concurrency tests open ~1,000 sockets
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("AISIX_")}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.process = subprocess.Popen(
                [*self.command, "--config", str(self.config_path)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.dir,
            )
        try:
            self._wait_ready()
        except BaseException:
            self._abandon()
            raise
        return self

    def _abandon(self) -> None:
        """Kill a gateway that failed to start, so teardown does not report it twice."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        urls = [self.proxy_url + "/readyz"]
        if self.admin_enabled:
            urls.append(self.admin_url + "/livez")
        for url in urls:
            while True:
                assert self.process is not None
                code = self.process.poll()
                if code is not None:
                    raise AssertionError(
                        f"aisix exited with {code} during startup; stderr:\n{self.stderr_text()}"
                    )
                try:
                    if http_request("GET", url, timeout=1.0).status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"aisix not ready after {STARTUP_DEADLINE_S}s ({url}); "
                        f"stderr:\n{self.stderr_text()}"
                    )
                time.sleep(0.05)

    def stop(self, expect_code: int | None = 0, timeout: float = 20.0) -> int:
        """SIGTERM, wait, and check the exit status (None: do not check)."""
        assert self.process is not None, "gateway not running"
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            raise AssertionError(f"aisix did not exit within {timeout}s of SIGTERM") from None
        if expect_code is not None:
            assert code == expect_code, f"aisix exit status {code}; stderr:\n{self.stderr_text()}"
        return code

    def restart(self) -> Gateway:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- output ----------------------------------------------------------------------------

    def stdout_text(self) -> str:
        return self.stdout_path.read_text("utf-8", "replace") if self.stdout_path.exists() else ""

    def stderr_text(self) -> str:
        return self.stderr_path.read_text("utf-8", "replace") if self.stderr_path.exists() else ""

    def access_log_lines(self) -> list[dict[str, Any]]:
        """The access-log records (JSON objects with `request_id` and `status`) on stdout."""
        records: list[dict[str, Any]] = []
        for line in self.stdout_text().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and "request_id" in record and "status" in record:
                records.append(record)
        return records

    # -- HTTP ------------------------------------------------------------------------------

    def admin(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        key: str | None = ADMIN_KEY,
    ) -> HttpResponse:
        """Admin API call; `path` is either full (`/admin/v1/models`) or relative (`/models`)."""
        if not path.startswith(("/admin", "/livez")):
            path = "/admin/v1" + path
        all_headers = dict(headers or {})
        if key is not None:
            all_headers.setdefault("Authorization", f"Bearer {key}")
        return http_request(
            method, self.admin_url + path, json=json, data=data, headers=all_headers
        )

    def proxy(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        api_key: str | None = None,
        timeout: float = 15.0,
    ) -> HttpResponse:
        all_headers = dict(headers or {})
        if api_key is not None:
            all_headers.setdefault("Authorization", f"Bearer {api_key}")
        return http_request(
            method,
            self.proxy_url + path,
            json=json,
            data=data,
            headers=all_headers,
            timeout=timeout,
        )

    def status(self, path: str) -> HttpResponse:
        return http_request("GET", self.status_url + path)

    def raw_proxy(self, head: bytes, body: bytes = b"") -> HttpResponse:
        return send_raw(self.proxy_host, self.proxy_port, head, body)

    def raw_admin(self, head: bytes, body: bytes = b"") -> HttpResponse:
        return send_raw(self.admin_host, self.admin_port, head, body)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the `/metrics` samples of `name` whose labels include `labels` (0 if none)."""
        response = self.status("/metrics")
        assert response.status == 200, response
        total = 0.0
        for line in response.text.splitlines():
            match = _METRIC_LINE.match(line)
            if not match or match.group(1) != name:
                continue
            have = dict(_LABEL.findall(match.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
        return total

    def stream_and_hang_up(self, payload: bytes, headers: dict[str, str]) -> None:
        """POST a streaming chat request on a raw socket, read up to its first chunk, then
        close the connection (a client going away mid-stream)."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {self.proxy_host}\r\n"
            f"Content-Type: application/json\r\n{extra}"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        received = b""
        with socket.create_connection((self.proxy_host, self.proxy_port), timeout=5) as sock:
            sock.sendall(head + payload)
            while b"data: " not in received:
                chunk = sock.recv(65536)
                assert chunk, f"stream ended before its first chunk: {received!r}"
                received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received

    def assert_alive(self) -> None:
        assert self.running, f"aisix died; stderr:\n{self.stderr_text()}"
        response = http_request("GET", self.proxy_url + "/livez")
        assert response.status == 200, response
        assert response.text.strip() == "ok"

    def openai_client(self, api_key: str = CALLER_KEY, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 15.0)
        return openai.OpenAI(base_url=self.proxy_url + "/v1", api_key=api_key, **kwargs)

    # -- resources -------------------------------------------------------------------------

    def create(self, kind: str, value: dict[str, Any]) -> str:
        """POST a resource, assert 201, return its id."""
        response = self.admin("POST", f"/{kind}", value)
        assert response.status == 201, (kind, response.status, response.text)
        return str(response.json["id"])

    def create_provider_key(self, upstream_url: str, **fields: Any) -> str:
        value = {
            "display_name": "openai-test",
            "adapter": "openai",
            "provider": "openai",
            "secret": PROVIDER_SECRET,
            "api_base": upstream_url + "/v1",
            **fields,
        }
        return self.create("provider_keys", value)

    def create_model(self, display_name: str, provider_key_id: str, **fields: Any) -> str:
        value = {
            "display_name": display_name,
            "provider": "openai",
            "model_name": UPSTREAM_MODEL,
            "provider_key_id": provider_key_id,
            **fields,
        }
        return self.create("models", value)

    def create_api_key(self, plaintext: str, allowed_models: list[str], **fields: Any) -> str:
        value = {"key_hash": sha256_hex(plaintext), "allowed_models": allowed_models, **fields}
        return self.create("apikeys", value)

    def can_call(self, api_key: str, alias: str) -> bool:
        """True once `api_key` lists `alias` on `GET /v1/models` (propagation check)."""
        response = self.proxy("GET", "/v1/models", api_key=api_key)
        if response.status != 200:
            return False
        return any(m.get("id") == alias for m in response.json.get("data", []))

    def wait_for_key(self, api_key: str, alias: str = ALIAS, timeout: float = 2.0) -> None:
        wait_for(lambda: self.can_call(api_key, alias), timeout, f"{alias!r} to be callable")

    def seed(self, upstream_url: str) -> Seed:
        """Provider key -> `upstream_url`/v1, alias gpt-4o-prod -> gpt-4o, caller sk-app-caller."""
        pk_id = self.create_provider_key(upstream_url)
        model_id = self.create_model(ALIAS, pk_id)
        key_id = self.create_api_key(CALLER_KEY, [ALIAS])
        self.wait_for_key(CALLER_KEY)
        return Seed(provider_key_id=pk_id, model_id=model_id, api_key_id=key_id)


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def entra_setup() -> EntraSetup:
    """A tenant, client id and secret for the fake Entra ID."""
    return EntraSetup()


@pytest.fixture
def entra(entra_setup: EntraSetup) -> Iterator[FakeEntraID]:
    """The fake Entra ID token endpoint, trusting `entra_setup`'s client."""
    fake = FakeEntraID({entra_setup.client_id: entra_setup.client_secret}).start()
    fake.tenants = {entra_setup.tenant}
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def azure(entra: FakeEntraID) -> Iterator[FakeAzureOpenAI]:
    """The fake Azure OpenAI resource with deployment `gpt4o`, accepting `entra`'s tokens."""
    fake = FakeAzureOpenAI(entra=entra, deployments={"gpt4o": "gpt-4o-2024-08-06"}).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def gateway(tmp_path: Path, port_factory: Callable[[], int]) -> Iterator[GatewayFactory]:
    """Factory: `gateway(overrides=None, start=True)` -> a started `Gateway`; stopped after the
    test, with its exit status checked."""
    made: list[Gateway] = []

    def make(overrides: dict[str, Any] | None = None, *, start: bool = True) -> Gateway:
        gw = Gateway(tmp_path, port_factory, overrides)
        made.append(gw)
        return gw.start() if start else gw

    yield make
    failures: list[str] = []
    for gw in made:
        if gw.process is None:
            continue
        try:
            gw.stop()
        except AssertionError as err:
            failures.append(str(err))
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def seeded(gateway: GatewayFactory, fake_openai: FakeOpenAIUpstream) -> tuple[Gateway, Seed]:
    """A started gateway seeded with `Gateway.seed(fake_openai.url)`."""
    gw = gateway()
    return gw, gw.seed(fake_openai.url)


# Test modules import these helpers as `e2e_helpers`: a stable name whatever module name pytest
# gives this conftest (`conftest`, `tests.e2e.conftest`, ...), which depends on its import mode.
sys.modules.setdefault("e2e_helpers", sys.modules[__name__])
