"""The etcd store (contract §2.3, §3.4, §11.1), spoken through etcd's v3 JSON gateway.

Every resource is one key `<prefix>/<segment>/<id>` whose value is the bare `value` JSON, so an
operator may write keys directly in etcd; a value that is not a JSON object still loads (as an
object holding the raw text under an unknown field) so `build_snapshot` rejects it. Creation
order is each key's `create_revision`, a resource's revision its `version`, the store revision
the response header's `revision`. All calls are HTTP POSTs made with aiohttp (keys and values
base64), tried against each endpoint in turn; any failure is `StoreUnavailable` (admin 503).

`transact` reads the whole prefix, runs the caller's function against that view, then commits
its puts and deletes in ONE etcd txn guarded by compares: nothing under the prefix modified since
the read, every touched key unchanged (absent for creates), and the marker key
`<prefix>/_meta/write_lock` unchanged (the txn bumps it, so deletes made by another writer are
noticed too). A failed compare re-runs the whole transaction, a few times at most; one
process's own transactions take turns (an asyncio lock), so only other writers can conflict.

`changes()` watches the prefix from the last revision it or `load_all` saw, plus one, and yields
the revision after each event batch. When the stream breaks it raises `StoreUnavailable`; the
supervisor's loop then waits (1 s doubling to 60 s), runs a full `load_all` and calls
`changes()` again, which resumes after the reloaded revision. A compacted start revision yields
once (forcing a full reload) and re-watches from the current revision. After 10 s of silence
the watch checks that etcd still answers and holds nothing newer than what was seen, so a
silently dead connection is noticed too.
"""

from __future__ import annotations

import asyncio
import base64
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
from yarl import URL

from aisix.resources import KINDS
from aisix.settings import EtcdSettings
from aisix.snapshot import Record
from aisix.store.base import StoreTx, StoreUnavailable

T = TypeVar("T")
R = TypeVar("R")

LOCK_KEY = "_meta/write_lock"
#: how often a transaction whose compare failed (a concurrent write) is re-run
MAX_ATTEMPTS = 5
#: the field a value that is not a JSON object loads as, so validation rejects it by name
NOT_AN_OBJECT = "(stored value is not a JSON object)"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _prefix_end(key: bytes) -> bytes:
    """The smallest key greater than every key starting with `key` (etcd's range_end)."""
    stripped = key.rstrip(b"\xff")
    if not stripped:
        return b"\x00"  # every key
    return stripped[:-1] + bytes([stripped[-1] + 1])


@dataclass(frozen=True, slots=True)
class _Kv:
    key: str  # relative to the prefix: "<segment>/<id>"
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


def _record(kv: _Kv) -> Record | None:
    """The resource a key holds, or None for keys outside the layout (e.g. the write lock)."""
    segment, _, resource_id = kv.key.partition("/")
    if segment not in KINDS or not resource_id or "/" in resource_id:
        return None
    try:
        value: Any = orjson.loads(kv.value)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        value = {NOT_AN_OBJECT: kv.value.decode("utf-8", "replace")[:200]}
    return Record(segment, resource_id, value, kv.version)


def _in_creation_order(kvs: list[_Kv]) -> list[_Kv]:
    return sorted(kvs, key=lambda kv: (kv.create_revision, kv.key))


class _EtcdTx:
    """A transaction's private view: the records read, plus the writes to commit."""

    def __init__(self, kvs: list[_Kv]) -> None:
        self.base = {kv.key: kv for kv in kvs}
        self.view: dict[tuple[str, str], Record] = {}
        for kv in kvs:
            record = _record(kv)
            if record is not None:
                self.view[(record.kind, record.id)] = record
        #: relative key → value to put, or None to delete; one op per key, the last one wins
        self.writes: dict[str, dict[str, Any] | None] = {}

    def records(self) -> list[Record]:
        return list(self.view.values())

    def get(self, kind: str, resource_id: str) -> Record | None:
        return self.view.get((kind, resource_id))

    def put(self, kind: str, resource_id: str, value: dict[str, Any]) -> Record:
        key = f"{kind}/{resource_id}"
        old = self.base.get(key)
        record = Record(kind, resource_id, value, (old.version if old else 0) + 1)
        self.view[(kind, resource_id)] = record
        self.writes[key] = value
        return record

    def delete(self, kind: str, resource_id: str) -> bool:
        if self.view.pop((kind, resource_id), None) is None:
            return False
        self.writes[f"{kind}/{resource_id}"] = None
        return True


class _EtcdError(Exception):
    """etcd answered, with an error."""


class EtcdStore:
    source_type = "etcd"
    writable = True
    #: a newer control plane may write fields this version does not know: drop, not reject
    tolerates_unknown_fields = True
    #: seconds of watch silence after which etcd is asked whether the watch missed anything
    watch_check_interval = 10.0

    def __init__(self, etcd: EtcdSettings, resolve: Callable[[str], Path] = Path) -> None:
        """`resolve` turns the TLS file names into paths (relative to the config file)."""
        scheme = "https://" if etcd.tls else "http://"
        self._endpoints = [(e if "://" in e else scheme + e).rstrip("/") for e in etcd.endpoints]
        shown = [str(URL(e).with_user(None)) for e in self._endpoints]
        self._shown = dict(zip(self._endpoints, shown, strict=True))
        self._root = etcd.effective_prefix + "/"
        self.location = ",".join(shown) + etcd.effective_prefix
        self._username, self._password = etcd.username, etcd.password or ""
        self._tls, self._resolve = etcd.tls, resolve
        #: TLS name to verify instead of each endpoint's host (`etcd.tls.domain_name`)
        self._server_name = etcd.tls.domain_name if etcd.tls else None
        dial, request = etcd.dial_timeout_ms / 1000, etcd.request_timeout_ms / 1000
        self._timeout = aiohttp.ClientTimeout(total=dial + request, sock_connect=dial)
        self._watch_timeout = aiohttp.ClientTimeout(total=None, sock_connect=dial)
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[str, str] = {}  # per endpoint: etcd's simple tokens are per member
        self._writing = asyncio.Lock()
        self._current = 0
        self._healthy = False
        self._seen = 0  # newest revision reflected by load_all or reported by changes()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        context: ssl.SSLContext | bool = True
        if (tls := self._tls) is not None:
            key = self._resolve(tls.client_key_file) if tls.client_key_file else None
            try:
                context = ssl.create_default_context(cafile=self._resolve(tls.ca_cert_file))
                if tls.client_cert_file:
                    context.load_cert_chain(self._resolve(tls.client_cert_file), key)
            except (OSError, ssl.SSLError) as exc:
                raise RuntimeError(f"etcd.tls: {exc}") from None
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- HTTP ------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise StoreUnavailable("store unavailable: not open")
        return self._session

    async def _headers(self, endpoint: str) -> dict[str, str]:
        if self._username is None:
            return {}
        token = self._tokens.get(endpoint)
        if token is None:
            credentials = {"name": self._username, "password": self._password}
            answer = await self._post(endpoint, "/v3/auth/authenticate", credentials, {})
            token = self._tokens[endpoint] = str(answer.get("token", ""))
        return {"Authorization": token}

    async def _post(
        self, endpoint: str, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        async with self._http().post(
            endpoint + path,
            data=orjson.dumps(body),
            headers=headers,
            timeout=self._timeout,
            server_hostname=self._server_name,
        ) as response:
            raw = await response.read()
        try:
            data = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise _EtcdError(f"unexpected answer (HTTP {response.status})")
        if response.status != 200 or "error" in data:
            raise _EtcdError(str(data.get("message") or data.get("error") or response.status))
        return data

    async def _authed_post(self, endpoint: str, path: str, body: dict[str, Any]) -> Any:
        try:
            return await self._post(endpoint, path, body, await self._headers(endpoint))
        except _EtcdError as exc:
            if self._username is None or "auth" not in str(exc).lower():
                raise
            self._tokens.pop(endpoint, None)  # an expired token: authenticate once more
            return await self._post(endpoint, path, body, await self._headers(endpoint))

    async def _failover(self, action: Callable[[str], Awaitable[R]]) -> R:
        """Run `action` on the first endpoint that answers; remember it for the next call."""
        errors: list[str] = []
        for step in range(len(self._endpoints)):
            index = (self._current + step) % len(self._endpoints)
            endpoint = self._endpoints[index]
            try:
                result = await action(endpoint)
            except (_EtcdError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                errors.append(f"{self._shown[endpoint]}: {_describe(exc)}")
                continue
            self._current, self._healthy = index, True
            return result
        self._healthy = False
        raise StoreUnavailable("store unavailable: etcd " + "; ".join(errors))

    # -- blobs: values outside the resource prefix (no watch event, no reload) -----------

    def _blob_key(self, name: str) -> bytes:
        return (self._root.rstrip("/") + ".blobs/" + name).encode()

    async def blob_put(self, name: str, value: bytes, ttl_s: int) -> None:
        """Store `value` under `<prefix>.blobs/<name>` for `ttl_s` seconds (an etcd lease)."""
        lease = await self._call("/v3/lease/grant", {"TTL": ttl_s})
        body = {"key": _b64(self._blob_key(name)), "value": _b64(value), "lease": lease["ID"]}
        await self._call("/v3/kv/put", body)

    async def blob_get(self, name: str) -> bytes | None:
        data = await self._call("/v3/kv/range", {"key": _b64(self._blob_key(name))})
        kvs = data.get("kvs") or []
        return base64.b64decode(kvs[0]["value"]) if kvs else None

    async def blob_delete(self, name: str) -> None:
        await self._call("/v3/kv/deleterange", {"key": _b64(self._blob_key(name))})

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = await self._failover(lambda e: self._authed_post(e, path, body))
        return data

    async def _range(
        self, relative: str, *, single: bool = False, newest_only: bool = False
    ) -> tuple[list[_Kv], int]:
        """Keys under `<prefix>/<relative>` in creation order (or only the last modified)."""
        key = (self._root + relative).encode()
        body: dict[str, Any] = {"key": _b64(key)}
        if not single:
            body["range_end"] = _b64(_prefix_end(key))
        if newest_only:
            body.update(limit=1, sort_order="DESCEND", sort_target="MOD", keys_only=True)
        data = await self._call("/v3/kv/range", body)
        kvs = [
            _Kv(
                base64.b64decode(item["key"]).decode("utf-8", "replace")[len(self._root) :],
                base64.b64decode(item.get("value", "")),
                *(int(item.get(f, 0)) for f in ("create_revision", "mod_revision", "version")),
            )
            for item in data.get("kvs", [])
        ]
        return _in_creation_order(kvs), int(data["header"]["revision"])

    # -- reads -----------------------------------------------------------------------------

    async def load_all(self) -> tuple[list[Record], int]:
        kvs, revision = await self._range("")
        self._seen = revision
        return [r for r in map(_record, kvs) if r is not None], revision

    async def list(self, kind: str, limit: int | None, offset: int) -> tuple[list[Record], int]:
        kvs, _ = await self._range(f"{kind}/")
        records = [r for r in map(_record, kvs) if r is not None]
        end = None if limit is None else offset + limit
        return records[offset:end], len(records)

    async def get(self, kind: str, resource_id: str) -> Record | None:
        if "/" in resource_id or not resource_id:
            return None
        kvs, _ = await self._range(f"{kind}/{resource_id}", single=True)
        return _record(kvs[0]) if kvs else None

    # -- writes ----------------------------------------------------------------------------

    async def transact(self, fn: Callable[[StoreTx], T]) -> T:
        async with self._writing:  # this process's writes never conflict with each other
            for attempt in range(MAX_ATTEMPTS):
                kvs, revision = await self._range("")
                tx = _EtcdTx(kvs)
                result = fn(tx)
                if not tx.writes or await self._commit(tx, revision):
                    return result
                await asyncio.sleep(random.uniform(0.005, 0.03) * (attempt + 1))
        raise StoreUnavailable(
            f"store unavailable: concurrent writes kept conflicting ({MAX_ATTEMPTS} attempts)"
        )

    async def _commit(self, tx: _EtcdTx, revision: int) -> bool:
        root = self._root.encode()
        lock = tx.base.get(LOCK_KEY)
        compare: list[dict[str, Any]] = [
            # nothing under the prefix was put since the read ...
            {
                **_compare_mod(root, revision + 1),
                "range_end": _b64(_prefix_end(root)),
                "result": "LESS",
            },
            # ... and no other transaction committed (this also catches its deletes)
            _compare_mod(root + LOCK_KEY.encode(), lock.mod_revision if lock else 0),
        ]
        success: list[dict[str, Any]] = []
        for relative, value in tx.writes.items():
            key = root + relative.encode()
            old = tx.base.get(relative)
            compare.append(_compare_mod(key, old.mod_revision if old else 0))
            if old is None:
                compare.append(
                    {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}
                )
            if value is None:
                success.append({"request_delete_range": {"key": _b64(key)}})
            else:
                success.append(
                    {"request_put": {"key": _b64(key), "value": _b64(orjson.dumps(value))}}
                )
        marker = _b64(str(revision).encode())
        success.append({"request_put": {"key": _b64(root + LOCK_KEY.encode()), "value": marker}})
        data = await self._call("/v3/kv/txn", {"compare": compare, "success": success})
        return bool(data.get("succeeded"))

    # -- change feed -----------------------------------------------------------------------

    async def changes(self) -> AsyncIterator[int]:
        root = self._root.encode()
        while True:
            request = {
                "create_request": {
                    "key": _b64(root),
                    "range_end": _b64(_prefix_end(root)),
                    "start_revision": self._seen + 1,
                }
            }
            response = await self._open_watch(request)
            compacted = 0
            try:
                async for result in self._watch_results(response):
                    if result.get("canceled"):
                        compacted = int(result.get("compact_revision", 0))
                        if not compacted:
                            reason = result.get("cancel_reason") or "canceled by etcd"
                            raise StoreUnavailable(f"store unavailable: watch {reason}")
                        break
                    self._healthy = True
                    events = result.get("events") or []
                    newest = max((int(e["kv"].get("mod_revision", 0)) for e in events), default=0)
                    if newest > self._seen:
                        self._seen = newest
                        yield int(result["header"]["revision"])
            except StoreUnavailable as exc:
                self._healthy = False
                if "auth" in str(exc).lower():
                    self._tokens.clear()
                raise
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
                self._healthy = False
                raise StoreUnavailable(f"store unavailable: watch: {_describe(exc)}") from None
            finally:
                response.close()
            if not compacted:
                self._healthy = False
                raise StoreUnavailable("store unavailable: watch stream closed")
            # history before `compacted` is gone: have the supervisor reload everything
            self._seen = max(self._seen, compacted - 1)
            yield compacted

    async def _open_watch(self, request: dict[str, Any]) -> aiohttp.ClientResponse:
        async def open_on(endpoint: str) -> aiohttp.ClientResponse:
            response = await self._http().post(
                endpoint + "/v3/watch",
                data=orjson.dumps(request),
                headers=await self._headers(endpoint),
                timeout=self._watch_timeout,
                server_hostname=self._server_name,
            )
            if response.status != 200:
                response.close()
                raise _EtcdError(f"watch answered HTTP {response.status}")
            return response

        return await self._failover(open_on)

    async def _watch_results(
        self, response: aiohttp.ClientResponse
    ) -> AsyncIterator[dict[str, Any]]:
        """The `result` objects of a watch stream (one JSON document per line); errors raise.

        After `watch_check_interval` seconds of silence, etcd must still answer and must hold
        no change newer than the last one seen, or the watch is considered lost."""
        buffer = b""
        while True:
            try:
                chunk = await asyncio.wait_for(
                    response.content.readany(), self.watch_check_interval
                )
            except TimeoutError:
                newest, _ = await self._range("", newest_only=True)
                if newest and newest[0].mod_revision > self._seen:
                    raise StoreUnavailable("store unavailable: watch missed changes") from None
                continue
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = orjson.loads(line) if line.strip() else {}
                if "error" in message:
                    error = message["error"]
                    detail = error.get("message") if isinstance(error, dict) else error
                    raise StoreUnavailable(f"store unavailable: watch: {detail}")
                if message:
                    yield message.get("result") or {}

    def connected(self) -> bool:
        return self._healthy and self._session is not None


def _compare_mod(key: bytes, mod_revision: int) -> dict[str, Any]:
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": mod_revision}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
