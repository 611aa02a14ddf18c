"""The one load pipeline: raw records → typed resources → cross-reference checks → Snapshot.

Boot, reloads, admin writes and `aisix validate` all go through here. `ResourceIndex` answers
the cross-resource questions (does this provider key exist, is this alias single-target, who
refers to this id, is this name taken) for both admin writes and snapshot builds, so the rules
exist once. `build_snapshot` never raises on bad data: a resource that fails is listed as
rejected and, where a previous snapshot had a valid version of it, that version keeps serving.
With `tolerant=True` (resources a newer control plane wrote into etcd) an unknown field is
dropped instead of rejecting the resource, and counted in `Snapshot.partially_compatible`.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from aisix.redact import Redactor
from aisix.resources import (
    ApiKey,
    BudgetPolicy,
    DirectModel,
    ProviderKey,
    RateLimitPolicy,
    Resource,
    ResourceInvalid,
    RoutingModel,
    identity_of,
    parse_rfc3339,
    validate_value,
)
from aisix.snapshot import (
    Allowlist,
    KeyEntry,
    KeyMatch,
    ModelEntry,
    ProviderKeyEntry,
    Record,
    Rejected,
    Snapshot,
    now,
)

TargetFactory = Callable[[ProviderKeyEntry, DirectModel], Any]
_BUILD_ORDER = ("provider_keys", "models", "api_keys", "rate_limit_policies", "budget_policies")


class ReferenceError_(ResourceInvalid):
    """A reference names something that does not exist (400)."""


class Conflict(ValueError):
    """A uniqueness clash or a delete/rename of something referenced (409)."""


class ResourceIndex:
    """Typed, valid resources by kind and id, with the lookups reference checks need."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Resource]] = {kind: {} for kind in _BUILD_ORDER}

    @classmethod
    def from_records(cls, records: Iterable[Record]) -> ResourceIndex:
        """Stored records (tolerating unknown fields: they are references, not a write)."""
        index = cls()
        for record in records:
            try:
                index.items[record.kind][record.id] = tolerant_validate(record.kind, record.value)[
                    0
                ]
            except ResourceInvalid:
                continue
        return index

    def model_by_alias(self, alias: str) -> tuple[str, DirectModel | RoutingModel] | None:
        for model_id, value in self.items["models"].items():
            assert isinstance(value, DirectModel | RoutingModel)
            if value.display_name == alias:
                return model_id, value
        return None

    def check_references(self, kind: str, value: Resource) -> None:
        """Raise ReferenceError_ when `value` points at something missing."""
        if isinstance(value, DirectModel):
            if value.provider_key_id not in self.items["provider_keys"]:
                raise ReferenceError_(f'provider_key_id "{value.provider_key_id}" does not exist')
        elif isinstance(value, RoutingModel):
            for i, target in enumerate(value.routing.targets):
                found = self.model_by_alias(target.model)
                if found is None or not isinstance(found[1], DirectModel):
                    raise ReferenceError_(
                        f'routing.targets[{i}].model "{target.model}" is not a single-target model'
                    )
        elif isinstance(value, RateLimitPolicy | BudgetPolicy):
            target_kind = {
                "api_key": "api_keys",
                "model": "models",
                "provider_key": "provider_keys",
            }.get(value.scope)
            if target_kind and value.scope_ref not in self.items[target_kind]:
                raise ReferenceError_(f'scope_ref "{value.scope_ref}" does not exist')

    def check_unique(self, kind: str, resource_id: str, value: Resource) -> None:
        """Raise Conflict when `value` clashes with another resource of its kind."""
        name = identity_of(kind, value)
        field_name = "name" if isinstance(value, RateLimitPolicy | BudgetPolicy) else "display_name"
        for other_id, other in self.items[kind].items():
            if other_id == resource_id:
                continue
            if name is not None and identity_of(kind, other) == name:
                raise Conflict(f'{field_name} "{name}" already in use by another resource')
            if (
                isinstance(value, ApiKey)
                and isinstance(other, ApiKey)
                and other.key_hash == value.key_hash
            ):
                raise Conflict("key_hash already in use by another resource")

    def referrers(self, kind: str, resource_id: str) -> list[tuple[str, str, str | None]]:
        """(kind, id, name) of every resource that refers to `kind`/`resource_id`."""
        found: list[tuple[str, str, str | None]] = []
        target = self.items[kind].get(resource_id)
        for model_id, model in self.items["models"].items():
            if (
                kind == "provider_keys"
                and isinstance(model, DirectModel)
                and model.provider_key_id == resource_id
            ):
                found.append(("models", model_id, model.display_name))
            if kind == "models" and isinstance(model, RoutingModel) and target is not None:
                alias = identity_of(kind, target)
                if any(t.model == alias for t in model.routing.targets):
                    found.append(("models", model_id, model.display_name))
        scope_of = {"provider_keys": "provider_key", "models": "model", "api_keys": "api_key"}
        scope = scope_of.get(kind)
        for policy_kind in ("rate_limit_policies", "budget_policies"):
            for policy_id, policy in self.items[policy_kind].items():
                assert isinstance(policy, RateLimitPolicy | BudgetPolicy)
                if scope and policy.scope == scope and policy.scope_ref == resource_id:
                    found.append((policy_kind, policy_id, policy.name))
        return found

    def check_rename(self, resource_id: str, value: Resource) -> None:
        """A model rename is refused while a routing target names the old alias."""
        old = self.items["models"].get(resource_id)
        if old is None or not isinstance(value, DirectModel | RoutingModel):
            return
        assert isinstance(old, DirectModel | RoutingModel)
        # a routing target must stay a single-target model under the same alias
        if old.display_name == value.display_name and not (
            isinstance(old, DirectModel) and isinstance(value, RoutingModel)
        ):
            return
        for ref_kind, ref_id, ref_name in self.referrers("models", resource_id):
            if ref_kind == "models":
                raise Conflict(
                    f'models "{resource_id}" is referenced by {ref_kind} "{ref_id}" ("{ref_name}")'
                )


def describe_referrer(kind: str, resource_id: str, ref: tuple[str, str, str | None]) -> str:
    ref_kind, ref_id, ref_name = ref
    label = f' ("{ref_name}")' if ref_name else ""
    return f'{kind} "{resource_id}" is referenced by {ref_kind} "{ref_id}"{label}'


_UNKNOWN_FIELD = re.compile(r'^unknown field "([^"]+)"$')
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
#: most unknown fields dropped from one resource before it is rejected anyway
MAX_DROPPED_FIELDS = 32


def _drop_field(value: Any, path: str) -> bool:
    parts = [int(i) if i else name for name, i in _PATH_PART.findall(path)]
    node = value
    for part in parts[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = parts[-1] if parts else None
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    return False


def tolerant_validate(kind: str, raw: Mapping[str, Any]) -> tuple[Resource, list[str]]:
    """Validate, dropping unknown fields; return the value and the dropped field paths."""
    dropped: list[str] = []
    value: Any = raw
    while True:
        try:
            return validate_value(kind, value), dropped
        except ResourceInvalid as exc:
            found = _UNKNOWN_FIELD.match(str(exc))
            if found is None or len(dropped) >= MAX_DROPPED_FIELDS:
                raise
            if not dropped:
                value = copy.deepcopy(dict(raw))
            if not _drop_field(value, found.group(1)):
                raise
            dropped.append(found.group(1))


def adapter_was_explicit(raw: Mapping[str, Any]) -> bool:
    """True when a stored provider key chose its adapter (contract §13, provider families).

    The admin API materialises `adapter: openai` when a writer leaves it out, so a stored
    `openai` without `api_base` (which could only reach api.openai.com) counts as the default
    too; `openai` with an `api_base` (an OpenAI-compatible endpoint) stays explicit."""
    adapter = raw.get("adapter")
    if adapter is None:
        return False
    return not (adapter == "openai" and not raw.get("api_base"))


def build_snapshot(
    records: Iterable[Record],
    revision: int,
    previous: Snapshot | None = None,
    target_factory: TargetFactory | None = None,
    tolerant: bool = False,
) -> Snapshot:
    """Compile records into a Snapshot; invalid records are rejected, never fatal."""
    by_kind: dict[str, dict[str, Record]] = {kind: {} for kind in _BUILD_ORDER}
    for record in records:
        if record.kind in by_kind:
            by_kind[record.kind][record.id] = record
    index = ResourceIndex()
    valid: dict[str, dict[str, Record]] = {kind: {} for kind in _BUILD_ORDER}
    rejected: list[Rejected] = []
    stale_since = (
        {(r.kind, r.id): r.serving_stale_since for r in previous.rejected} if previous else {}
    )
    # routing models reference direct ones, so direct models are indexed first
    ordered = [(k, r) for k in _BUILD_ORDER for r in _models_first(k, by_kind[k].values())]
    partial: Counter[tuple[str, str]] = Counter()
    for kind, record in ordered:
        error = _accept(index, kind, record, partial if tolerant else None)
        if error is None:
            valid[kind][record.id] = record
            continue
        old = previous.records.get(kind, {}).get(record.id) if previous else None
        name = record.value.get("display_name") or record.value.get("name")
        since = None
        if (
            old is not None
            and old.revision != record.revision
            and _accept(index, kind, old, Counter() if tolerant else None) is None
        ):
            valid[kind][record.id] = old
            since = stale_since.get((kind, record.id)) or now()
        rejected.append(
            Rejected(kind, record.id, name if isinstance(name, str) else None, error, since)
        )
    provider_keys = {
        pid: ProviderKeyEntry(
            pid,
            valid["provider_keys"][pid].revision,
            value,
            adapter_was_explicit(valid["provider_keys"][pid].value),
        )
        for pid, value in index.items["provider_keys"].items()
        if isinstance(value, ProviderKey)
    }
    targets = _build_targets(index, valid, rejected, provider_keys, target_factory)
    snapshot = _compile(index, valid, revision, tuple(rejected), provider_keys, targets)
    if not partial:
        return snapshot
    fields = tuple(sorted((kind, path, n) for (kind, path), n in partial.items()))
    return replace(snapshot, partially_compatible=fields)


def _models_first(kind: str, records: Iterable[Record]) -> list[Record]:
    if kind != "models":
        return list(records)
    return sorted(records, key=lambda r: "routing" in r.value)


def _accept(
    index: ResourceIndex,
    kind: str,
    record: Record,
    partial: Counter[tuple[str, str]] | None = None,
) -> str | None:
    """Validate and index one record; `partial` (tolerant mode) counts dropped fields."""
    try:
        if partial is None:
            value = validate_value(kind, record.value)
        else:
            value, dropped = tolerant_validate(kind, record.value)
            for path in dropped:
                partial[(kind, path)] += 1
        index.check_references(kind, value)
        index.check_unique(kind, record.id, value)
    except (ResourceInvalid, Conflict) as exc:
        return str(exc)
    index.items[kind][record.id] = value
    return None


def _build_targets(
    index: ResourceIndex,
    valid: dict[str, dict[str, Record]],
    rejected: list[Rejected],
    provider_keys: dict[str, ProviderKeyEntry],
    target_factory: TargetFactory | None,
) -> dict[str, Any]:
    """Each direct model's upstream target, by model id. A model whose target cannot be
    built is rejected (with every routing alias that names it); the build goes on."""
    targets: dict[str, Any] = {}
    models = index.items["models"]
    failed: set[str] = set()
    for mid, value in list(models.items()):
        if not isinstance(value, DirectModel):
            continue
        if target_factory is None:
            targets[mid] = None
            continue
        pk = provider_keys[value.provider_key_id]
        try:
            targets[mid] = target_factory(pk, value)
        except Exception as exc:
            failed.add(value.display_name)
            reason = Redactor.from_provider_secrets([pk.value.secret]).redact(str(exc))
            _reject_model(
                index, valid, rejected, mid, f"cannot build the upstream target: {reason}"
            )
    for mid, value in list(models.items()):
        if isinstance(value, RoutingModel):
            missing = [t.model for t in value.routing.targets if t.model in failed]
            if missing:
                message = f'routing target "{missing[0]}" was rejected'
                _reject_model(index, valid, rejected, mid, message)
    return targets


def _reject_model(
    index: ResourceIndex,
    valid: dict[str, dict[str, Record]],
    rejected: list[Rejected],
    model_id: str,
    error: str,
) -> None:
    value = index.items["models"].pop(model_id)
    valid["models"].pop(model_id, None)
    rejected.append(Rejected("models", model_id, identity_of("models", value), error, None))


def _compile(
    index: ResourceIndex,
    valid: dict[str, dict[str, Record]],
    revision: int,
    rejected: tuple[Rejected, ...],
    provider_keys: dict[str, ProviderKeyEntry],
    targets: dict[str, Any],
) -> Snapshot:
    models_by_id: dict[str, ModelEntry] = {}
    for mid, value in index.items["models"].items():
        if isinstance(value, DirectModel):
            pk = provider_keys[value.provider_key_id]
            models_by_id[mid] = ModelEntry(
                mid,
                valid["models"][mid].revision,
                value,
                pk,
                targets[mid],
                (),
                networks := _networks(value),
                bool(networks),
            )
    by_alias = {entry.alias: entry for entry in models_by_id.values()}
    for mid, value in index.items["models"].items():
        if isinstance(value, RoutingModel):
            routes = tuple((by_alias[t.model], t.weight, t.priority) for t in value.routing.targets)
            entry = ModelEntry(
                mid,
                valid["models"][mid].revision,
                value,
                None,
                None,
                routes,
                networks := _networks(value),
                bool(networks) or any(target.ip_sensitive for target, _, _ in routes),
            )
            models_by_id[mid] = entry
    models_by_alias = {entry.alias: entry for entry in models_by_id.values()}
    listable = tuple(
        sorted((m for m in models_by_id.values() if not m.is_routing), key=lambda m: m.alias)
    )
    api_keys: dict[str, KeyEntry] = {}
    keys_by_hash: dict[str, KeyMatch] = {}
    for kid, value in index.items["api_keys"].items():
        assert isinstance(value, ApiKey)
        expires = parse_rfc3339(value.expires_at).timestamp() if value.expires_at else None
        entry_key = KeyEntry(
            kid,
            valid["api_keys"][kid].revision,
            value,
            Allowlist.compile(value.allowed_models),
            expires,
        )
        api_keys[kid] = entry_key
        if value.previous_key_hash and value.previous_key_expires_at:
            until = parse_rfc3339(value.previous_key_expires_at).timestamp()
            keys_by_hash.setdefault(value.previous_key_hash, KeyMatch(entry_key, until))
    for entry_key in api_keys.values():
        keys_by_hash[entry_key.value.key_hash] = KeyMatch(entry_key, None)
    return Snapshot(
        revision=revision,
        applied_at=now(),
        provider_keys=provider_keys,
        models_by_id=models_by_id,
        models_by_alias=models_by_alias,
        listable_models=listable,
        api_keys=api_keys,
        keys_by_hash=keys_by_hash,
        rate_limit_policies={
            pid: v
            for pid, v in index.items["rate_limit_policies"].items()
            if isinstance(v, RateLimitPolicy)
        },
        budget_policies={
            pid: v
            for pid, v in index.items["budget_policies"].items()
            if isinstance(v, BudgetPolicy)
        },
        rejected=rejected,
        records=valid,
    )


def _networks(value: DirectModel | RoutingModel) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in value.allowed_cidrs or ())
