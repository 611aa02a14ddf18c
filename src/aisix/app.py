"""The gateway process: builds every component from Settings and runs the listeners.

`Gateway` owns the lifecycle: open the store, publish the first snapshot, start the upstream
transport, bind the proxy, admin and status listeners (uvicorn with httptools + uvloop on
sockets we create, so `proxy.workers > 1` can share the proxy port with SO_REUSEPORT), then
wait for a signal. SIGHUP reloads a resources file; SIGTERM/SIGINT drain: health endpoints
answer 503, listeners keep accepting for `shutdown.min_drain_secs`, then stop accepting and
in-flight requests get `shutdown_grace_secs`. A store that cannot be reached at boot is not
fatal: the last good snapshot from `managed.snapshot_cache_path` serves if there is one, else
the gateway answers 503 `never_loaded` until the supervisor's first load succeeds.
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
from aisix.admin.audit import AuditLog
from aisix.admin.routing import AdminRequest, AdminResponse
from aisix.admin.ui.server import UiAssets
from aisix.egress import EgressPolicy
from aisix.events import EventBus
from aisix.limits.factory import build_governor
from aisix.limits.governor import Governor
from aisix.listener import Guard, Render, auto_proxy_cap, render_error_msg
from aisix.loader import build_snapshot
from aisix.obs.access_log import AccessLog
from aisix.obs.budget_gauges import budget_rows
from aisix.obs.config_status import ConfigStatus
from aisix.obs.health import HealthFront
from aisix.obs.metrics import Metrics
from aisix.obs.status import StatusApp, StoreOutage
from aisix.obs.workers import WorkerLinks, serve_metrics_requests
from aisix.providers.registry import Registry
from aisix.providers.transport import Transport
from aisix.proxy.client_ip import ClientIPResolver
from aisix.proxy.context import ProxyRuntime
from aisix.proxy.cors import CorsApp
from aisix.proxy.egress import Egress
from aisix.proxy.server import ProxyApp, render_refusal
from aisix.redact import Redactor
from aisix.responses_store import BlobStore, ResponseStore
from aisix.routing.health import HealthRegistry
from aisix.routing.strategies import Router
from aisix.settings import ConfigError, Settings, TLSFiles
from aisix.snapshot import Snapshot, SnapshotHolder
from aisix.store.base import ResourceStore
from aisix.store.snapshot_cache import read_cache, write_cache
from aisix.store.supervisor import Supervisor
from aisix.transport.errors import ConnectError as TLSSetupError
from aisix.transport.tls import context_for
from aisix.usage import BatchingLedger, UsageApi, build_ledger

log = logging.getLogger("aisix")


#: `downstream.idle_timeout_secs: 0` (never close an idle connection) as uvicorn's timer
NEVER_SECONDS = 10 * 365 * 24 * 3600

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


NOT_LOADED = AdminResponse(503, {"error_msg": "resources not loaded yet (store unreachable)"})


def _env_id(settings: Settings) -> str:
    return settings.etcd.env_id if settings.etcd is not None else ""


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
    guard: Guard


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


def listener_guard(name: str, settings: Settings, render: Render) -> Guard:
    """The limits of listener `name` (`listener.*`; caps from `listener.max_connections`)."""
    limits = settings.listener
    caps = limits.max_connections
    cap = {"admin": caps.admin, "status": caps.status}.get(name)
    if cap is None:
        cap = caps.proxy or auto_proxy_cap(caps.admin + caps.status)
    return Guard(name, limits, cap, render)


def _uvicorn_server(
    app: Any, grace: int, tls: TLSFiles | None, settings: Settings, guard: Guard
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        http=guard.protocol_class(),
        ws="none",  # no listener speaks WebSocket; an Upgrade request is plain HTTP
        loop="none",
        lifespan="off",
        access_log=False,
        proxy_headers=False,  # client IP comes from proxy.real_ip, not uvicorn's middleware
        server_header=False,
        date_header=False,
        log_level=settings.observability.uvicorn_log_level,
        timeout_graceful_shutdown=grace,
        timeout_keep_alive=settings.downstream.idle_timeout_secs or NEVER_SECONDS,
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
        self.metrics = Metrics(settings.observability.metrics, self.holder, _env_id(settings))
        self.health = HealthRegistry()
        self.router = Router(self.health)
        self.transport = Transport.from_settings(settings.upstream)
        self.store = make_store(settings)
        self.registry = Registry(
            settings.upstream.tls, settings.resolve, send=self.transport.upstream.send
        )
        self.supervisor = Supervisor(
            self.store, self.holder, self.registry.build_target, self._on_reload
        )
        self.config_status = ConfigStatus(self.supervisor, self.store, self.holder)
        self.metrics.bind_config_source(self.store.connected)
        self._cache_lock = asyncio.Lock()
        self._cache_tasks: set[asyncio.Task[None]] = set()
        self.governor: Governor | None = None
        self.listeners: list[Listener] = []
        self.stop_event = asyncio.Event()
        self.runtime: ProxyRuntime | None = None
        self.ledger: BatchingLedger | None = None
        self.usage_api: UsageApi | None = None
        self._cleanup: list[Callable[[], Awaitable[None]]] = []
        self._snapshot_redactor = redact.NO_SECRETS
        self.store_outage = StoreOutage()

    def _on_reload(self, ok: bool, snapshot: Snapshot | None) -> None:
        self.config_status.on_reload(ok, snapshot)
        failure = self.supervisor.last_failure
        if snapshot is not None:
            self._install_redactor(snapshot)
        self.store_outage.observe(self.store.connected())
        self.metrics.on_reload(
            ok,
            snapshot,
            None if ok or failure is None else failure.error_kind,
            self.supervisor.observed_revision,
            self.config_status.hash,
        )
        if snapshot is not None:
            self.health.prune(snapshot.models_by_id.keys())
            self.router.prune(snapshot.models_by_id.keys())
            if not self.supervisor.serving_cache:
                self._schedule_cache_write(snapshot)

    def _schedule_cache_write(self, snapshot: Snapshot) -> None:
        path = self.settings.snapshot_cache
        if path is None or not self.serve_admin:
            return  # extra workers leave the cache to the main process

        async def write() -> None:
            async with self._cache_lock:  # one write at a time, and only the newest snapshot
                if snapshot is not self.holder.current:
                    return
                try:
                    await asyncio.to_thread(write_cache, path, snapshot, self.store.location)
                except OSError as exc:
                    log.warning("snapshot cache %s not written: %s", path, exc)

        task = asyncio.get_running_loop().create_task(write())
        self._cache_tasks.add(task)
        task.add_done_callback(self._cache_tasks.discard)

    def _serve_cached_snapshot(self) -> bool:
        path = self.settings.snapshot_cache
        cached = read_cache(path, self.store.location) if path is not None else None
        if cached is None:
            return False
        records, revision = cached
        tolerant = bool(getattr(self.store, "tolerates_unknown_fields", False))
        snapshot = build_snapshot(records, revision, None, self.registry.build_target, tolerant)
        log.warning(
            "resource store unreachable at boot; serving the cached snapshot (revision %s)",
            revision,
        )
        self.supervisor.adopt(snapshot)
        return True

    async def start(self) -> None:
        settings = self.settings
        try:
            await self.store.open()
        except Exception as exc:
            raise StartupError(str(exc)) from None
        self._cleanup.append(self.store.close)
        await self.supervisor.start()
        self._cleanup.append(self.supervisor.stop)
        if self.holder.current is None and not self._serve_cached_snapshot():
            error = self.supervisor.last_reload.error if self.supervisor.last_reload else "?"
            if self.store.source_type != "etcd":
                raise StartupError(f"cannot load resources: {error}")
            log.warning("resources not loaded yet (%s); serving 503 until etcd answers", error)
        try:
            context_for(self.registry.base_tls)  # `upstream.tls` files are checked at boot
        except TLSSetupError as exc:
            raise StartupError(f"upstream.tls: {exc}") from None
        await self.transport.start()
        self._cleanup.append(self.transport.close)
        self.ledger = build_ledger(
            settings,
            on_drop=self.metrics.usage_drops.inc,
            on_spill=self.metrics.usage_spilled.inc,
            on_replay=self.metrics.usage_replayed.inc,
        )
        try:
            await self.ledger.start()
        except Exception as exc:
            where, text = "data_dir", str(exc)
            if settings.usage.backend == "postgres":  # never echo the DSN (it holds a password)
                where, text = "usage.dsn", text.replace(settings.usage.dsn or "", "<dsn>")
            raise StartupError(f"{where}: cannot open the usage ledger: {text}") from None
        self._cleanup.append(self.ledger.close)
        try:
            governor = await build_governor(settings, self.ledger, self.metrics)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        self._cleanup.append(governor.close)
        self.governor = governor
        self.usage_api = UsageApi(self.ledger, governor)
        sqlite_store = settings.etcd is None and settings.resources_file is None
        responses = ResponseStore(
            settings.sqlite_path if sqlite_store else None,
            ttl_s=settings.responses.ttl_secs,
            max_rows=settings.responses.max_stored,
            remote=self.store if isinstance(self.store, BlobStore) else None,
        )
        await responses.start()
        self._cleanup.append(responses.close)
        self.runtime = ProxyRuntime(
            settings=settings,
            holder=self.holder,
            transport=self.transport,
            router=self.router,
            health=self.health,
            governor=governor,
            bus=self.bus,
            client_ip=ClientIPResolver(settings.proxy.real_ip),
            responses=responses,
            egress=Egress(settings.upstream.proxy)
            if Egress.configured(settings.upstream.proxy)
            else None,
        )
        runtime = self.runtime
        self.metrics.bind_in_flight(lambda: float(runtime.in_flight))
        self.health.on_change = self.metrics.on_cooldown
        self.metrics.set_service(settings.observability.service_name)
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
        proxy_app: Any = ProxyApp(runtime)
        cors = settings.proxy.cors
        if cors.allow_origins:  # unwrapped by default: CORS costs nothing when off
            proxy_app = CorsApp(proxy_app, cors.allow_origins, cors.max_age_secs)
        planned: list[tuple[str, str, Any, socket.socket, TLSFiles | None]] = [
            ("proxy", "proxy.addr", proxy_app, proxy_sock, settings.proxy.tls)
        ]
        renders: dict[str, Render] = {"proxy": render_refusal}
        if self.serve_admin and settings.admin_listener_enabled:
            assert settings.admin.admin_keys
            admin_app = HealthFront(
                build_admin_app(
                    self.store,
                    settings.admin.admin_keys,
                    extra_routes=self._admin_routes(),
                    draining=lambda: runtime.draining,
                    audit=AuditLog(self.ledger) if self.ledger is not None else None,
                    ui=self._dashboard(),
                    egress=EgressPolicy.build(
                        settings.upstream.allowed_hosts, settings.upstream.denied_cidrs
                    ),
                ),
                lambda: runtime.draining,
                lambda: self.holder.current is not None,
            )
            sock = bind_socket(settings.admin.addr, "admin.addr")
            planned.append(("admin", "admin.addr", admin_app, sock, settings.admin.tls))
        prometheus = settings.observability.metrics.prometheus
        if self.serve_admin and prometheus.enabled:
            status_app = StatusApp(
                prometheus.path,
                self._render_metrics,
                self.config_status.render,
                self._models_status,
                lambda: runtime.draining,
                lambda: self.holder.current is not None,
            )
            sock = bind_socket(prometheus.addr, "observability.metrics.prometheus.addr")
            planned.append(("status", prometheus.addr, status_app, sock, None))
        for name, key, app, sock, tls in planned:
            guard = listener_guard(name, settings, renders.get(name, render_error_msg))
            server = _uvicorn_server(app, grace, tls, settings, guard)
            await server.startup(sockets=[sock])
            guard.start(server.server_state.connections)
            self.listeners.append(Listener(name, key, server, sock, guard))
        install_log_redaction()

    def _dashboard(self) -> UiAssets | None:
        ui = self.settings.admin.ui
        if not ui.enabled:
            return None
        return UiAssets(split_addr(self.settings.proxy.addr)[1], ui.proxy_url)

    async def _render_metrics(self) -> bytes:
        self.health.sweep()
        await self._collect_budgets()
        others = await self.worker_links.collect()
        return self.metrics.render(others)

    async def _collect_budgets(self) -> None:
        snapshot, governor = self.holder.current, self.governor
        if snapshot is not None and governor is not None:
            rows = await budget_rows(snapshot, governor)
            if rows is not None:
                self.metrics.set_budgets(rows)

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
            snapshot = self.holder.current
            if snapshot is None:
                return NOT_LOADED
            status, body = await self.usage_api.apikey_usage(
                request.path_params["id"], request.query, snapshot
            )
            return AdminResponse(status, body)

        async def usage(request: AdminRequest) -> AdminResponse:
            assert self.usage_api is not None
            snapshot = self.holder.current
            if snapshot is None:
                return NOT_LOADED
            status, body = await self.usage_api.usage(request.query, snapshot)
            return AdminResponse(status, body)

        async def timeseries(request: AdminRequest) -> AdminResponse:
            assert self.usage_api is not None
            status, body = await self.usage_api.timeseries(request.query)
            return AdminResponse(status, body)

        async def top(request: AdminRequest) -> AdminResponse:
            assert self.usage_api is not None
            snapshot = self.holder.current
            if snapshot is None:
                return NOT_LOADED
            status, body = await self.usage_api.top(request.query, snapshot)
            return AdminResponse(status, body)

        routes: dict[tuple[str, str], Callable[[AdminRequest], Awaitable[AdminResponse]]] = {
            ("GET", "/admin/v1/models/status"): models_status,
            ("GET", "/admin/v1/health"): health,
            ("GET", "/admin/v1/apikeys/{id}/usage"): key_usage,
            ("GET", "/admin/v1/api_keys/{id}/usage"): key_usage,
            ("GET", "/admin/v1/usage"): usage,
            ("GET", "/admin/v1/usage/timeseries"): timeseries,
            ("GET", "/admin/v1/usage/top"): top,
        }
        return routes

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

    async def drain_and_stop(self, min_drain_s: float = 0.0) -> None:
        """Report 503 on the health endpoints, keep accepting for `min_drain_s` (so a load
        balancer notices), then stop accepting and let in-flight requests finish."""
        if self.runtime is not None:
            self.runtime.draining = True
        if min_drain_s > 0 and self.listeners:
            log.info("draining: still accepting for %ss (shutdown.min_drain_secs)", min_drain_s)
            await asyncio.sleep(min_drain_s)
        for listener in self.listeners:
            for server in listener.server.servers:
                server.close()
        await asyncio.gather(
            *(listener.server.shutdown(sockets=[listener.sock]) for listener in self.listeners),
            return_exceptions=True,
        )
        for listener in self.listeners:
            listener.guard.stop()  # after shutdown: deadlines hold while in-flight work drains
        self.bus.flush()  # deliver the last requests' events before their sinks close
        if self._cache_tasks:  # a snapshot cache write under way finishes (bounded)
            await asyncio.wait(set(self._cache_tasks), timeout=5)
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
        await self.drain_and_stop(self.settings.shutdown.min_drain_secs)
        return 0
