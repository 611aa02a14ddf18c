"""The gateway process: builds every component from Settings and runs the listeners.

`Gateway` owns the lifecycle: open the store, publish the first snapshot, start the upstream
transport, bind the proxy, admin and status listeners (uvicorn with httptools + uvloop on
sockets we create, so `proxy.workers > 1` can share the proxy port with SO_REUSEPORT), then
wait for a signal. SIGHUP reloads a resources file; SIGTERM/SIGINT drain: health endpoints
answer 503, listeners stop accepting, in-flight requests get `shutdown_grace_secs`.
`check_startup` refuses admin keys under 16 characters and warns about non-loopback admin or
status listeners without TLS; every snapshot publish installs the secret redactor.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import uvicorn

from aisix import redact
from aisix.admin.app import build_admin_app
from aisix.admin.routing import AdminRequest, AdminResponse
from aisix.egress import EgressPolicy
from aisix.events import EventBus
from aisix.limits.factory import build_governor
from aisix.obs.access_log import AccessLog
from aisix.obs.metrics import Metrics
from aisix.obs.status import StatusApp, StoreOutage
from aisix.obs.workers import WorkerLinks, serve_metrics_requests
from aisix.providers.registry import build_target
from aisix.providers.transport import Transport
from aisix.proxy.client_ip import ClientIPResolver
from aisix.proxy.context import ProxyRuntime
from aisix.proxy.server import ProxyApp
from aisix.redact import Redactor
from aisix.routing.health import HealthRegistry
from aisix.routing.strategies import Router
from aisix.settings import ConfigError, Settings, TLSFiles
from aisix.snapshot import Snapshot, SnapshotHolder
from aisix.store.base import ResourceStore
from aisix.store.supervisor import Supervisor
from aisix.usage import UsageApi, UsageStore

log = logging.getLogger("aisix")


#: first-generation threshold: request objects die by reference counting, so cyclic
#: collections need not run every 700 allocations (profiles showed them on the hot path)
GC_GEN0_THRESHOLD = 20_000


def settle_garbage_collector() -> None:
    """Move everything allocated at startup (modules, settings, the first snapshot) out of
    the collector's view, and make young collections rarer."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def install_log_redaction() -> None:
    """Every handler of the root and uvicorn loggers redacts provider secrets (idempotent;
    uvicorn configures its loggers when a server config is made)."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, redact.RedactingFilter) for f in handler.filters):
                handler.addFilter(redact.RedactingFilter())


class StartupError(RuntimeError):
    """The gateway cannot start; the message names the cause (config key, path, port)."""


@dataclass(slots=True)
class Listener:
    name: str
    key: str
    server: uvicorn.Server
    sock: socket.socket


def listener_address(listener: Listener) -> str:
    """`proxy http://127.0.0.1:3000`: the address the socket is bound to (a `:0` port shows
    the port the kernel chose)."""
    host, port = listener.sock.getsockname()[:2]
    scheme = "https" if listener.server.config.ssl_certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    return f"{listener.name} {scheme}://{shown}:{port}"


#: an admin key shorter than this is refused at startup (exit 2)
MIN_ADMIN_KEY_LENGTH = 16


def check_startup(settings: Settings) -> list[str]:
    """Raise ConfigError for settings that must not serve; return warnings to log.

    Admin keys shorter than 16 characters are refused; an admin or status listener bound to
    a non-loopback address without TLS is served with a warning (keys and status travel in
    clear text)."""
    if settings.admin.enabled:
        for i, key in enumerate(settings.admin.admin_keys or ()):
            if len(key) < MIN_ADMIN_KEY_LENGTH:
                raise ConfigError(
                    f"admin.admin_keys[{i}]: an admin key must be at least "
                    f"{MIN_ADMIN_KEY_LENGTH} characters (it has {len(key)})"
                )
    warnings = []
    prometheus = settings.observability.metrics.prometheus
    listeners = [
        ("admin.addr", settings.admin.addr, settings.admin.enabled, settings.admin.tls),
        ("observability.metrics.prometheus.addr", prometheus.addr, prometheus.enabled, None),
    ]
    for key, addr, enabled, tls in listeners:
        if enabled and tls is None and not _is_loopback(split_addr(addr)[0]):
            warnings.append(
                f"{key} {addr} is not a loopback address and is served without TLS: "
                "bind it to 127.0.0.1 or put TLS in front of it"
            )
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def bind_socket(addr: str, key: str, reuse_port: bool = False) -> socket.socket:
    host, port = split_addr(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"{key}: cannot bind {addr}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def make_store(settings: Settings) -> ResourceStore:
    if settings.etcd is not None:
        from aisix.store.etcd import EtcdStore

        return EtcdStore(settings.etcd, settings.resolve)
    if settings.resources_file is not None:
        from aisix.store.file import FileStore

        return FileStore(settings.resolve(settings.resources_file), dict(os.environ))
    from aisix.store.sqlite import SqliteStore

    poll = (settings.store.poll_interval_ms if settings.store else 250) / 1000
    return SqliteStore(settings.sqlite_path, poll_interval=poll)


def _uvicorn_server(
    app: Any, grace: int, tls: TLSFiles | None, settings: Settings
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        http="httptools",
        loop="none",
        lifespan="off",
        access_log=False,
        proxy_headers=False,  # client IP comes from proxy.real_ip, not uvicorn's middleware
        server_header=False,
        date_header=False,
        log_level=settings.observability.log_level,
        timeout_graceful_shutdown=grace,
        timeout_keep_alive=75,
        ssl_certfile=str(settings.resolve(tls.cert_file)) if tls else None,
        ssl_keyfile=str(settings.resolve(tls.key_file)) if tls else None,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    return server


class Gateway:
    """One gateway process; `serve_admin` is False in extra proxy worker processes."""

    def __init__(
        self,
        settings: Settings,
        *,
        serve_admin: bool = True,
        on_stop: Callable[[], None] | None = None,
        worker_conns: list[Connection] | None = None,
        metrics_conn: Connection | None = None,
    ) -> None:
        self.settings = settings
        self.serve_admin = serve_admin
        #: main process: pipes to the extra workers; a worker: its pipe to the main process
        self.worker_conns = worker_conns or []
        self.metrics_conn = metrics_conn
        #: called as soon as a stop signal arrives (the main process forwards it to workers)
        self.on_stop = on_stop
        self.holder = SnapshotHolder()
        self.bus = EventBus()
        self.metrics = Metrics()
        self.health = HealthRegistry()
        self.router = Router(self.health)
        self.transport = Transport(
            settings.upstream.connect_timeout_ms,
            settings.upstream.pool_size_per_host,
            settings.upstream.idle_timeout_ms,
        )
        self.store = make_store(settings)
        self.supervisor = Supervisor(self.store, self.holder, build_target, self._on_reload)
        self.listeners: list[Listener] = []
        self.stop_event = asyncio.Event()
        self.runtime: ProxyRuntime | None = None
        self.ledger: UsageStore | None = None
        self.usage_api: UsageApi | None = None
        self._cleanup: list[Callable[[], Awaitable[None]]] = []
        self._snapshot_redactor = redact.NO_SECRETS
        self.store_outage = StoreOutage()

    def _on_reload(self, ok: bool, snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self._install_redactor(snapshot)
        self.store_outage.observe(self.store.connected())
        self.metrics.on_reload(
            ok,
            snapshot.revision if snapshot else None,
            len(snapshot.rejected) if snapshot else None,
        )
        if snapshot is not None:
            self.health.prune(snapshot.models_by_id.keys())
            self.router.prune(snapshot.models_by_id.keys())

    async def start(self) -> None:
        settings = self.settings
        try:
            await self.store.open()
        except Exception as exc:
            raise StartupError(str(exc)) from None
        self._cleanup.append(self.store.close)
        await self.supervisor.start()
        self._cleanup.append(self.supervisor.stop)
        if self.holder.current is None:
            error = self.supervisor.last_reload.error if self.supervisor.last_reload else "?"
            raise StartupError(f"cannot load resources: {error}")
        await self.transport.start()
        self._cleanup.append(self.transport.close)
        self.ledger = UsageStore(
            settings.data_path / "usage.db",
            max_pending=settings.usage.max_pending,
            flush_interval_s=settings.usage.flush_interval_ms / 1000,
            on_drop=self.metrics.usage_drops.inc,
            on_skip=self.metrics.usage_rows_skipped.inc,
        )
        try:
            await self.ledger.start()
        except Exception as exc:
            raise StartupError(f"data_dir: cannot open the usage ledger: {exc}") from None
        self._cleanup.append(self.ledger.close)
        try:
            governor = await build_governor(settings, self.ledger, self.metrics)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        self._cleanup.append(governor.close)
        self.usage_api = UsageApi(self.ledger, governor)
        self.runtime = ProxyRuntime(
            settings=settings,
            holder=self.holder,
            transport=self.transport,
            router=self.router,
            health=self.health,
            governor=governor,
            bus=self.bus,
            client_ip=ClientIPResolver(settings.proxy.real_ip),
        )
        runtime = self.runtime
        self.metrics.bind_in_flight(lambda: float(runtime.in_flight))
        self.health.on_change = lambda entry, state, reason: self.metrics.on_cooldown(
            entry.alias, state, reason
        )
        self.bus.subscribe(self.metrics.on_request)
        if self.metrics_conn is not None:
            serve_metrics_requests(asyncio.get_running_loop(), self.metrics_conn, self.metrics.dump)
        self.worker_links = WorkerLinks(
            self.worker_conns,
            settings.observability.metrics.prometheus.worker_timeout_ms / 1000,
            self.metrics.worker_scrape_failures.inc,
        )
        self.bus.subscribe(self.ledger.on_event)
        if settings.observability.access_log:
            self.bus.subscribe(AccessLog().on_request)
        await self._bind_listeners(runtime)

    async def _bind_listeners(self, runtime: ProxyRuntime) -> None:
        settings = self.settings
        grace = settings.proxy.shutdown_grace_secs
        proxy_sock = bind_socket(settings.proxy.addr, "proxy.addr", settings.proxy.workers > 1)
        planned: list[tuple[str, str, Any, socket.socket, TLSFiles | None]] = [
            ("proxy", "proxy.addr", ProxyApp(runtime), proxy_sock, settings.proxy.tls)
        ]
        if self.serve_admin and settings.admin.enabled:
            assert settings.admin.admin_keys
            admin_app = build_admin_app(
                self.store,
                settings.admin.admin_keys,
                extra_routes=self._admin_routes(),
                draining=lambda: runtime.draining,
                egress=EgressPolicy.build(
                    settings.upstream.allowed_hosts, settings.upstream.denied_cidrs
                ),
            )
            sock = bind_socket(settings.admin.addr, "admin.addr")
            planned.append(("admin", "admin.addr", admin_app, sock, settings.admin.tls))
        prometheus = settings.observability.metrics.prometheus
        if self.serve_admin and prometheus.enabled:
            status_app = StatusApp(
                prometheus.path,
                self._render_metrics,
                self.supervisor.status,
                self._models_status,
                lambda: self.holder.current is not None and not runtime.draining,
            )
            sock = bind_socket(prometheus.addr, "observability.metrics.prometheus.addr")
            planned.append(("status", prometheus.addr, status_app, sock, None))
        for name, key, app, sock, tls in planned:
            server = _uvicorn_server(app, grace, tls, settings)
            await server.startup(sockets=[sock])
            self.listeners.append(Listener(name, key, server, sock))
        install_log_redaction()

    async def _render_metrics(self) -> bytes:
        self.health.sweep()
        others = await self.worker_links.collect()
        return self.metrics.render(others)

    def _install_redactor(self, snapshot: Snapshot) -> None:
        """Secrets of this snapshot and the previous one (requests may still run on it)."""
        secrets = (pk.value.secret for pk in snapshot.provider_keys.values())
        fresh = Redactor.from_provider_secrets(secrets)
        redact.install(fresh.merged(self._snapshot_redactor))
        self._snapshot_redactor = fresh

    def _models_status(self) -> list[dict[str, Any]]:
        self.health.sweep()
        snapshot = self.holder.current
        if snapshot is None:
            return []
        status: list[dict[str, Any]] = redact.current().redact_value(
            self.health.status(snapshot.models_by_id.values())
        )
        return status

    def _admin_routes(
        self,
    ) -> dict[tuple[str, str], Callable[[AdminRequest], Awaitable[AdminResponse]]]:
        async def models_status(request: AdminRequest) -> AdminResponse:
            return AdminResponse(200, self._models_status())

        async def health(request: AdminRequest) -> AdminResponse:
            snapshot = self.holder.current
            models = self._models_status()
            cooling = any(m.get("status") == "cooldown" for m in models)
            down_for = self.store_outage.observe(self.store.connected())
            store_down = down_for > 0 and down_for >= self.settings.admin.store_degraded_after_secs
            body = {
                "status": "degraded" if cooling or store_down else "ok",
                "models": [
                    {
                        "id": m["id"],
                        "name": m["display_name"],
                        "health": 1 if m.get("status") == "cooldown" else 0,
                    }
                    for m in models
                    if m.get("kind") == "direct"
                ],
                "config": {
                    "snapshot_revision": snapshot.revision if snapshot else None,
                    "snapshot_age_seconds": int(time.time() - snapshot.applied_at)
                    if snapshot
                    else None,
                },
            }
            return AdminResponse(200, body)

        async def key_usage(request: AdminRequest) -> AdminResponse:
            assert self.usage_api is not None
            snapshot = self._snapshot()
            status, body = await self.usage_api.apikey_usage(
                request.path_params["id"], request.query, snapshot
            )
            return AdminResponse(status, body)

        async def usage(request: AdminRequest) -> AdminResponse:
            assert self.usage_api is not None
            status, body = await self.usage_api.usage(request.query, self._snapshot())
            return AdminResponse(status, body)

        routes: dict[tuple[str, str], Callable[[AdminRequest], Awaitable[AdminResponse]]] = {
            ("GET", "/admin/v1/models/status"): models_status,
            ("GET", "/admin/v1/health"): health,
            ("GET", "/admin/v1/apikeys/{id}/usage"): key_usage,
            ("GET", "/admin/v1/api_keys/{id}/usage"): key_usage,
            ("GET", "/admin/v1/usage"): usage,
        }
        return routes

    def _snapshot(self) -> Snapshot:
        snapshot = self.holder.current
        assert snapshot is not None, "admin routes are bound after the first snapshot"
        return snapshot

    async def reload_file(self) -> None:
        reload = getattr(self.store, "reload", None)
        if reload is None:
            log.info("SIGHUP ignored: the resource source is not a file")
            return
        try:
            await reload()
        except Exception as exc:
            log.error("resources file reload rejected: %s", exc)
            self.supervisor.record_failure(str(exc))

    async def drain_and_stop(self) -> None:
        if self.runtime is not None:
            self.runtime.draining = True
        for listener in self.listeners:
            for server in listener.server.servers:
                server.close()
        await asyncio.gather(
            *(listener.server.shutdown(sockets=[listener.sock]) for listener in self.listeners),
            return_exceptions=True,
        )
        self.bus.flush()  # deliver the last requests' events before their sinks close
        for close in reversed(self._cleanup):
            try:
                await close()
            except Exception:
                log.exception("error during shutdown")

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, drain and stop; return the exit status."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload_file()))
        try:
            await self.start()
        except StartupError:
            await self.drain_and_stop()
            raise
        settle_garbage_collector()
        log.info("aisix listening: %s", ", ".join(map(listener_address, self.listeners)))
        await self.stop_event.wait()
        log.info("draining")
        if self.on_stop is not None:
            self.on_stop()
        await self.drain_and_stop()
        return 0
