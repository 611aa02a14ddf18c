"""Generic CRUD for every available resource kind, plus API key rotation (contract §4, §5.4).

Each write runs inside one `store.transact` call, in the contract's order: fields (400) →
references (400) → uniqueness and renames (409) → commit (503). References and uniqueness
are checked by `aisix.loader.ResourceIndex` against the transaction's own view of the store,
so two concurrent writes can never both pass the same check. Provider key secrets are
write-only: reads show `"***"`, and a PUT that omits the secret or sends `"***"` keeps the
stored one. A provider key's `api_base` (and a secret's `token_url`) must pass the egress
policy (`aisix.egress`). Nothing here builds snapshots; `on_write` tells the supervisor to
reload. Each committed write is handed to the audit log (`aisix.admin.audit`) as one `Change`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aisix.admin.audit import AuditLog, Change
from aisix.admin.routing import (
    AdminError,
    AdminRequest,
    AdminResponse,
    Handler,
    Route,
    page_param,
)
from aisix.egress import DEFAULT_DENIED_CIDRS, EgressPolicy
from aisix.field_rules import secret_token_url
from aisix.field_types import INTEGRAL
from aisix.loader import Conflict, ResourceIndex, describe_referrer
from aisix.resources import (
    ID_PATTERN,
    SECRET_MASK,
    ProviderKey,
    Resource,
    ResourceInvalid,
    describe_validation_error,
    format_rfc3339,
    public_value,
    stored_value,
    validate_value,
)
from aisix.snapshot import Record
from aisix.store.base import ReadOnlyStore, ResourceStore, StoreTx, StoreUnavailable

#: URL segment → resource kind (`apikeys` is the documented path, `api_keys` its alias)
KIND_PATHS: dict[str, str] = {
    "provider_keys": "provider_keys",
    "models": "models",
    "apikeys": "api_keys",
    "api_keys": "api_keys",
    "rate_limit_policies": "rate_limit_policies",
    "budget_policies": "budget_policies",
}
RESERVED_KINDS = ("guardrails", "cache_policies", "observability_exporters")
MAX_LIST_LIMIT = 1000
#: the largest `?offset=` (a bigger one is a 400, not an overflow in the store)
MAX_LIST_OFFSET = 1_000_000_000
#: the longest `?search=` a list accepts
MAX_SEARCH_LENGTH = 256
#: value fields never searched (a secret must not be guessable through list filters)
_UNSEARCHED = frozenset({"secret", "key_hash", "previous_key_hash"})


def _search_words(raw: str | None) -> list[str]:
    if raw is None:
        return []
    if len(raw) > MAX_SEARCH_LENGTH:
        raise AdminError(400, f"search must be at most {MAX_SEARCH_LENGTH} characters")
    return [word for word in raw.lower().split() if word]


def _matches(record: Record, words: list[str]) -> bool:
    texts: list[str] = [record.id]
    for name, value in record.value.items():
        if name not in _UNSEARCHED:
            _texts(value, texts)
    haystack = " ".join(texts).lower()
    return all(word in haystack for word in words)


def _texts(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _texts(item, out)
    elif isinstance(value, dict):
        for item in value.values():
            _texts(item, out)


KindHandler = Callable[[str, AdminRequest], Awaitable[AdminResponse]]
#: a write run inside the store transaction; it appends what it changed
TxWrite = Callable[[StoreTx, list[Change]], AdminResponse]
NOT_FOUND = "resource not found"


class RotateRequest(BaseModel):
    """Body of `POST /admin/v1/apikeys/{id}/rotate`; the body itself is optional."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    grace_seconds: Annotated[int, Field(ge=0, le=86400), INTEGRAL] = 0


def envelope(record: Record) -> dict[str, Any]:
    return {
        "id": record.id,
        "value": public_value(record.kind, record.value),
        "revision": record.revision,
    }


def parse_json_body(body: bytes) -> Any:
    """The body as JSON whatever its Content-Type; 400 for non-UTF-8 or bad syntax."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise AdminError(400, "request body is not valid UTF-8") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AdminError(400, f"invalid JSON: {exc}") from None


def _require_id(resource_id: str) -> None:
    if resource_id == "status" or not ID_PATTERN.fullmatch(resource_id):
        shown = resource_id if len(resource_id) <= 80 else resource_id[:80] + "…"
        raise AdminError(
            400,
            f'invalid id "{shown}": must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$ '
            'and not be "status"',
        )


def _keep_secret(raw: Any, current: Record | None) -> Any:
    """On PUT, an omitted or masked provider key secret means "keep the stored one"."""
    if not isinstance(raw, dict):
        return raw
    sent = raw.get("secret", raw.get("api_key"))
    if current is not None and (sent is None or sent == SECRET_MASK):
        raw = {k: v for k, v in raw.items() if k not in ("secret", "api_key")}
        raw["secret"] = current.value.get("secret")
    elif sent == SECRET_MASK:
        raise AdminError(400, 'secret: "***" is the read mask; send the real secret')
    return raw


class ResourceHandlers:
    """The CRUD and rotate handlers over one store."""

    def __init__(
        self,
        store: ResourceStore,
        on_write: Callable[[], None] | None,
        audit: AuditLog | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.store = store
        self.on_write = on_write
        self.audit = audit
        self.egress = egress or EgressPolicy.build((), DEFAULT_DENIED_CIDRS)

    def routes(self) -> list[Route]:
        routes: list[Route] = []
        for segment, kind in KIND_PATHS.items():
            collection = f"/admin/v1/{segment}"
            item = collection + "/{id}"
            routes += [
                Route("GET", collection, self._bind(self.list_resources, kind)),
                Route("POST", collection, self._bind(self.create, kind), writes=True),
                Route("GET", item, self._bind(self.read, kind)),
                Route("PUT", item, self._bind(self.replace, kind), writes=True),
                Route("DELETE", item, self._bind(self.delete, kind), writes=True),
            ]
            if kind == "api_keys":
                routes.append(Route("POST", item + "/rotate", self.rotate, writes=True))
        return routes

    @staticmethod
    def _bind(method: KindHandler, kind: str) -> Handler:
        async def handler(request: AdminRequest) -> AdminResponse:
            return await method(kind, request)

        return handler

    async def _transact(self, request: AdminRequest, fn: TxWrite) -> AdminResponse:
        changes: list[Change] = []

        def run(tx: StoreTx) -> AdminResponse:
            changes.clear()  # a store may run the function again (etcd retries a race)
            return fn(tx, changes)

        try:
            response = await self.store.transact(run)
        except ResourceInvalid as exc:
            raise AdminError(400, str(exc)) from None
        except Conflict as exc:
            raise AdminError(409, str(exc)) from None
        except ReadOnlyStore as exc:
            raise AdminError(405, str(exc)) from None
        except StoreUnavailable as exc:
            raise AdminError(503, _unavailable(exc)) from None
        if response.status < 300:
            if self.on_write is not None:
                self.on_write()
            if self.audit is not None:
                for change in changes:
                    await self.audit.record(request, change)
        return response

    # -- reads -----------------------------------------------------------------------------

    async def list_resources(self, kind: str, request: AdminRequest) -> AdminResponse:
        limit = page_param(request.query, "limit", 1, MAX_LIST_LIMIT)
        offset = page_param(request.query, "offset", 0, MAX_LIST_OFFSET) or 0
        words = _search_words(request.query.get("search"))
        try:
            if words:  # filtered on the server (the dashboard searches 10,000 keys with it)
                every, _ = await self.store.list(kind, None, 0)
                found = [r for r in every if _matches(r, words)]
                records = found[offset : offset + limit if limit is not None else None]
                total = len(found)
            else:
                records, total = await self.store.list(kind, limit, offset)
        except StoreUnavailable as exc:
            raise AdminError(503, _unavailable(exc)) from None
        return AdminResponse(200, {"list": [envelope(r) for r in records], "total": total})

    async def read(self, kind: str, request: AdminRequest) -> AdminResponse:
        try:
            record = await self.store.get(kind, request.path_params["id"])
        except StoreUnavailable as exc:
            raise AdminError(503, _unavailable(exc)) from None
        if record is None:
            raise AdminError(404, NOT_FOUND)
        return AdminResponse(200, envelope(record))

    # -- writes ----------------------------------------------------------------------------

    async def create(self, kind: str, request: AdminRequest) -> AdminResponse:
        raw = parse_json_body(request.body)
        resource_id = str(uuid.uuid4())
        if kind == "provider_keys":
            raw = _keep_secret(raw, None)
        egress = self.egress
        return await self._transact(
            request, lambda tx, changes: _write(tx, kind, resource_id, raw, None, changes, egress)
        )

    async def replace(self, kind: str, request: AdminRequest) -> AdminResponse:
        resource_id = request.path_params["id"]
        _require_id(resource_id)
        raw = parse_json_body(request.body)

        def put(tx: StoreTx, changes: list[Change]) -> AdminResponse:
            current = tx.get(kind, resource_id)
            value = _keep_secret(raw, current) if kind == "provider_keys" else raw
            return _write(tx, kind, resource_id, value, current, changes, self.egress)

        return await self._transact(request, put)

    async def delete(self, kind: str, request: AdminRequest) -> AdminResponse:
        resource_id = request.path_params["id"]

        def remove(tx: StoreTx, changes: list[Change]) -> AdminResponse:
            current = tx.get(kind, resource_id)
            if current is None:
                raise AdminError(404, NOT_FOUND)
            refs = ResourceIndex.from_records(tx.records()).referrers(kind, resource_id)
            if refs:
                raise Conflict(describe_referrer(kind, resource_id, refs[0]))
            tx.delete(kind, resource_id)
            changes.append(Change("delete", kind, resource_id, current.value, None))
            return AdminResponse(200, {"deleted": True, "id": resource_id})

        return await self._transact(request, remove)

    async def rotate(self, request: AdminRequest) -> AdminResponse:
        options = RotateRequest()
        if request.body.strip():
            try:
                options = RotateRequest.model_validate(parse_json_body(request.body))
            except ValidationError as exc:
                raise AdminError(400, describe_validation_error(exc)) from None
        resource_id = request.path_params["id"]
        plaintext = "sk-" + secrets.token_hex(16)

        def rotate(tx: StoreTx, changes: list[Change]) -> AdminResponse:
            current = tx.get("api_keys", resource_id)
            if current is None:
                raise AdminError(404, NOT_FOUND)
            value = dict(current.value)
            old_hash = value.get("key_hash")
            value["key_hash"] = hashlib.sha256(plaintext.encode()).hexdigest()
            value.pop("previous_key_hash", None)
            value.pop("previous_key_expires_at", None)
            if options.grace_seconds > 0 and isinstance(old_hash, str):
                value["previous_key_hash"] = old_hash
                until = time.time() + options.grace_seconds
                value["previous_key_expires_at"] = format_rfc3339(until)
            written = _write(tx, "api_keys", resource_id, value, current, changes, self.egress)
            changes[-1] = dataclasses.replace(changes[-1], action="rotate")
            return AdminResponse(200, {"entry": written.body, "plaintext": plaintext})

        return await self._transact(request, rotate)


def _write(
    tx: StoreTx,
    kind: str,
    resource_id: str,
    raw: Any,
    current: Record | None,
    changes: list[Change],
    egress: EgressPolicy,
) -> AdminResponse:
    """Validate `raw` as `kind` against the transaction's view and store it."""
    value = validate_value(kind, raw)
    _check_egress(value, egress)
    index = ResourceIndex.from_records(tx.records())
    index.check_references(kind, value)
    index.check_unique(kind, resource_id, value)
    index.check_rename(resource_id, value)
    record = tx.put(kind, resource_id, stored_value(value))
    action = "create" if current is None else "update"
    changes.append(
        Change(action, kind, resource_id, current.value if current else None, record.value)
    )
    return AdminResponse(201 if current is None else 200, envelope(record))


def _check_egress(value: Resource, egress: EgressPolicy) -> None:
    """A provider key's api_base (and a secret's token_url) must name a host the egress
    policy allows (400)."""
    if not isinstance(value, ProviderKey):
        return
    for field_name, url in (
        ("api_base", value.api_base),
        ("secret: token_url", secret_token_url(value.secret)),
    ):
        if url:
            reason = egress.check(urlsplit(url).hostname or "")
            if reason is not None:
                raise ResourceInvalid(f"{field_name}: {reason}")


def _unavailable(exc: StoreUnavailable) -> str:
    message = str(exc)
    return message if message.startswith("store unavailable") else f"store unavailable: {message}"
