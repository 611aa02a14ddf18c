"""The audit log of admin writes: who changed what, recorded after each commit, and its read.

Every create, update (PUT), delete and rotate that committed is one `AuditRow`: the time,
the actor (the first 16 hex of the SHA-256 of the admin key used, never the key), the kind,
the resource id, and a diff of `value` by field path (`rate_limit.rpm`), each changed path
as `{"before", "after"}`. Secrets are masked as `"***"` in every diff (a changed provider key
secret shows that it changed, never what it was); rotate plaintexts never reach it. Rows
live in the usage ledger's database (`aisix.usage`), so with PostgreSQL the log is the
cluster's. `AuditApi` answers `GET /admin/v1/audit` with filters and paging, newest first.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from aisix.admin.routing import AdminError, AdminRequest, AdminResponse, presented_key
from aisix.resources import SECRET_MASK, parse_rfc3339, public_value
from aisix.usage.base import LedgerUnavailable, UsageLedger
from aisix.usage.rows import AuditRow

log = logging.getLogger("aisix.admin.audit")
ACTIONS = ("create", "update", "delete", "rotate")
KINDS = ("provider_keys", "models", "api_keys", "rate_limit_policies", "budget_policies")
#: kind names accepted by the `kind` filter besides the canonical ones
KIND_ALIASES = {"apikeys": "api_keys"}
#: field names whose values are masked wherever they appear in a diff
SECRET_FIELDS = frozenset({"secret", "api_key", "plaintext"})
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write, as the CRUD handler saw it (stored values, before and after)."""

    action: str
    kind: str
    resource_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for name, child in value.items():
            _flatten(child, f"{prefix}.{name}" if prefix else str(name), out)
    elif prefix:
        out[prefix] = value


def _masked(path: str, value: Any) -> Any:
    if value is not None and path.rsplit(".", 1)[-1] in SECRET_FIELDS:
        return SECRET_MASK
    return value


def value_diff(
    kind: str, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Changed field paths of `value` with secrets masked; lists compare whole."""
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    _flatten(public_value(kind, before) if before is not None else {}, "", old)
    _flatten(public_value(kind, after) if after is not None else {}, "", new)
    raw_old: dict[str, Any] = {}
    raw_new: dict[str, Any] = {}
    _flatten(before or {}, "", raw_old)
    _flatten(after or {}, "", raw_new)
    diff: dict[str, dict[str, Any]] = {}
    for path in sorted(raw_old.keys() | raw_new.keys()):
        if raw_old.get(path) == raw_new.get(path):
            continue
        diff[path] = {
            "before": _masked(path, old.get(path)),
            "after": _masked(path, new.get(path)),
        }
    return diff


class AuditLog:
    """Records changes into the ledger; a failure is logged, never fails the admin write."""

    def __init__(self, ledger: UsageLedger, clock: Any = time.time) -> None:
        self._ledger = ledger
        self._clock = clock
        self._last_us = 0

    async def record(self, request: AdminRequest, change: Change) -> None:
        key = presented_key(request.scope) or b""
        at_us = max(round(self._clock() * 1_000_000), self._last_us + 1)
        self._last_us = at_us
        row = AuditRow(
            id=f"{at_us:016x}-{uuid.uuid4().hex[:12]}",  # sorts by time, then is unique
            at_ms=at_us // 1000,
            actor=fingerprint(key),
            action=change.action,
            kind=change.kind,
            resource_id=change.resource_id,
            diff=value_diff(change.kind, change.before, change.after),
        )
        try:
            await self._ledger.record_audit(row)
        except Exception:
            log.exception("audit entry for %s %s/%s not recorded", row.action, row.kind, row.id)

    async def read(self, request: AdminRequest) -> AdminResponse:
        """`GET /admin/v1/audit?kind=&resource_id=&action=&actor=&from=&to=&limit=&offset=`."""
        where, params = _filters(request.query)
        limit = _int(request.query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _int(request.query, "offset", 0, 0, None)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        try:
            total = await self._ledger.query(f"SELECT COUNT(*) FROM audit_log{clause}", params)
            rows = await self._ledger.query(
                "SELECT id, at_ms, actor, action, kind, resource_id, diff FROM audit_log"
                f"{clause} ORDER BY at_ms DESC, id DESC LIMIT ? OFFSET ?",
                (*params, limit, offset),
            )
        except LedgerUnavailable as exc:
            raise AdminError(503, str(exc)) from None
        entries = [
            {
                "id": entry_id,
                "at": _rfc3339_ms(int(at_ms)),
                "actor": actor,
                "action": action,
                "kind": kind,
                "resource_id": resource_id,
                "diff": orjson.loads(diff),
            }
            for entry_id, at_ms, actor, action, kind, resource_id, diff in rows
        ]
        body = {"total": int(total[0][0]), "limit": limit, "offset": offset, "entries": entries}
        return AdminResponse(200, body)


def _filters(query: dict[str, str]) -> tuple[list[str], tuple[Any, ...]]:
    where: list[str] = []
    params: list[Any] = []
    if "kind" in query:
        kind = KIND_ALIASES.get(query["kind"], query["kind"])
        if kind not in KINDS:
            raise AdminError(400, f"kind must be one of {', '.join(KINDS)}")
        where.append("kind = ?")
        params.append(kind)
    if "action" in query:
        if query["action"] not in ACTIONS:
            raise AdminError(400, f"action must be one of {', '.join(ACTIONS)}")
        where.append("action = ?")
        params.append(query["action"])
    for name in ("resource_id", "actor"):
        if name in query:
            where.append(f"{name} = ?")
            params.append(query[name])
    for name, op in (("from", ">="), ("to", "<")):
        if name in query:
            try:
                at = parse_rfc3339(query[name]).timestamp()
            except ValueError:
                raise AdminError(400, "from and to must be RFC 3339 timestamps") from None
            where.append(f"at_ms {op} ?")
            params.append(round(at * 1000))
    return where, tuple(params)


def _int(query: dict[str, str], name: str, default: int, low: int, high: int | None) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < low or (high is not None and int(raw) > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise AdminError(400, f"{name} must be an integer {bound}")
    return int(raw)


def _rfc3339_ms(at_ms: int) -> str:
    seconds, millis = divmod(at_ms, 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{millis:03d}Z"
