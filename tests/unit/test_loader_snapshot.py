"""The load pipeline (contract §3.3, §11.2): build_snapshot, stale serving, ResourceIndex."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from aisix.loader import Conflict, ResourceIndex, build_snapshot, describe_referrer
from aisix.resources import parse_rfc3339, validate_value
from aisix.snapshot import Allowlist, Record, Snapshot


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pk(pid: str = "pk1", rev: int = 1) -> Record:
    return Record("provider_keys", pid, {"display_name": f"name-{pid}", "secret": "s"}, rev)


def direct(mid: str, alias: str, key: str = "pk1", rev: int = 1, **extra: Any) -> Record:
    value = {"display_name": alias, "provider": "openai", "model_name": "gpt-4o", **extra}
    return Record("models", mid, {**value, "provider_key_id": key}, rev)


def routing(mid: str, alias: str, *targets: str, rev: int = 1) -> Record:
    value = {"display_name": alias, "routing": {"targets": [{"model": t} for t in targets]}}
    return Record("models", mid, value, rev)


def api_key(kid: str, plaintext: str, rev: int = 1, **extra: Any) -> Record:
    return Record("api_keys", kid, {"key_hash": sha(plaintext), "allowed_models": [], **extra}, rev)


def rejected_ids(snap: Snapshot) -> dict[str, str]:
    return {r.id: r.error for r in snap.rejected}


# --- build_snapshot ------------------------------------------------------------------------


def test_dangling_references_are_rejected_and_left_out() -> None:
    records = [
        pk(),
        direct("m1", "good"),
        direct("m2", "orphan", key="missing"),
        routing("r1", "chat", "good"),
        routing("r2", "chat-bad", "orphan"),
        routing("r3", "nested", "chat"),
        Record(
            "rate_limit_policies",
            "p1",
            {
                "name": "cap",
                "scope": "api_key",
                "scope_ref": "nobody",
                "window": "minute",
                "max_requests": 1,
            },
            1,
        ),
    ]
    snap = build_snapshot(records, revision=7)
    assert snap.revision == 7
    assert set(snap.models_by_id) == {"m1", "r1"}
    errors = rejected_ids(snap)
    assert set(errors) == {"m2", "r2", "r3", "p1"}
    assert errors["m2"] == 'provider_key_id "missing" does not exist'
    assert "routing.targets[0].model" in errors["r2"]
    assert 'scope_ref "nobody"' in errors["p1"]
    assert all(r.serving_stale_since is None for r in snap.rejected)
    assert {r.id: r.name for r in snap.rejected}["m2"] == "orphan"
    assert snap.counts() == {
        "provider_keys": 1,
        "models": 2,
        "api_keys": 0,
        "rate_limit_policies": 0,
        "budget_policies": 0,
    }


def test_routing_alias_resolves_targets_whatever_the_record_order() -> None:
    records = [routing("r1", "chat", "b", "a"), direct("ma", "a"), direct("mb", "b"), pk()]
    snap = build_snapshot(records, revision=1)
    assert snap.rejected == ()
    chat = snap.models_by_alias["chat"]
    assert chat.is_routing
    assert [(t.id, w, p) for t, w, p in chat.routes] == [("mb", 1, 0), ("ma", 1, 0)]
    assert [m.alias for m in snap.listable_models] == ["a", "b"]
    assert snap.models_by_alias["a"].provider_key is not None


def test_invalid_update_keeps_serving_previous_version() -> None:
    first = build_snapshot([pk(), direct("m1", "alias", rev=1)], revision=1)
    broken = [pk(), direct("m1", "alias", key="gone", rev=2)]
    second = build_snapshot(broken, revision=2, previous=first)
    served = second.models_by_id["m1"]
    assert served.revision == 1
    assert served.value.provider_key_id == "pk1"  # type: ignore[union-attr]
    [rejected] = second.rejected
    assert (rejected.kind, rejected.id) == ("models", "m1")
    assert rejected.serving_stale_since is not None
    # a later rebuild with the same bad record keeps the original stale-since time
    third = build_snapshot(broken, revision=3, previous=second)
    assert third.models_by_id["m1"].revision == 1
    assert third.rejected[0].serving_stale_since == rejected.serving_stale_since
    # fixing it clears the rejection
    fixed = build_snapshot([pk(), direct("m1", "alias", rev=3)], revision=4, previous=third)
    assert fixed.rejected == () and fixed.models_by_id["m1"].revision == 3


def test_invalid_resource_without_valid_past_is_left_out() -> None:
    first = build_snapshot([pk()], revision=1)
    second = build_snapshot([pk(), direct("m1", "x", key="gone")], revision=2, previous=first)
    assert "m1" not in second.models_by_id
    assert second.rejected[0].serving_stale_since is None


def test_stale_version_needs_its_references_too() -> None:
    first = build_snapshot([pk(), direct("m1", "alias", rev=1)], revision=1)
    # the provider key is deleted and the model updated to a bad reference in one change
    second = build_snapshot([direct("m1", "alias", key="x", rev=2)], revision=2, previous=first)
    assert second.models_by_id == {}
    assert second.rejected[0].serving_stale_since is None


def test_duplicate_identity_rejects_one_of_them() -> None:
    snap = build_snapshot([pk(), direct("m1", "same"), direct("m2", "same")], revision=1)
    assert len(snap.models_by_id) == 1
    [rejected] = snap.rejected
    assert "already in use" in rejected.error


def test_keys_by_hash_includes_previous_hash_with_valid_until() -> None:
    records = [
        api_key(
            "k1",
            "new",
            previous_key_hash=sha("old"),
            previous_key_expires_at="2026-01-05T10:05:00Z",
        ),
        api_key("k2", "other"),
    ]
    snap = build_snapshot(records, revision=1)
    assert snap.keys_by_hash[sha("new")].key.id == "k1"
    assert snap.keys_by_hash[sha("new")].valid_until is None
    previous = snap.keys_by_hash[sha("old")]
    assert previous.key.id == "k1"
    assert previous.valid_until == parse_rfc3339("2026-01-05T10:05:00Z").timestamp()
    assert len(snap.keys_by_hash) == 3


def test_current_hash_wins_over_someone_elses_previous_hash() -> None:
    records = [
        api_key(
            "k1", "new", previous_key_hash=sha("x"), previous_key_expires_at="2030-01-01T00:00:00Z"
        ),
        api_key("k2", "x"),
    ]
    snap = build_snapshot(records, revision=1)
    match = snap.keys_by_hash[sha("x")]
    assert (match.key.id, match.valid_until) == ("k2", None)


# --- Allowlist -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "alias", "allowed"),
    [
        (["gpt-4o"], "gpt-4o", True),
        (["gpt-4o"], "gpt-4o-mini", False),
        (["gpt-4o"], "GPT-4O", False),
        (["openai/*"], "openai/gpt-4o", True),
        (["openai/*"], "openai/", True),
        (["openai/*"], "azure/gpt-4o", False),
        (["gpt-*-mini"], "gpt-4o-mini", True),
        (["gpt-*-mini"], "gpt-4o-mini-2", False),
        (["gpt-*-mini"], "gpt-mini", False),
        (["*-prod"], "chat-prod", True),
        (["*"], "anything", True),
        (["*"], "", True),
        (["*gpt*"], "gpt", False),
        (["*gpt*"], "my-gpt-4", False),
        (["a*b*c"], "abc", False),
        (["**"], "x", False),
        ([], "gpt-4o", False),
        (["x", "gpt-*"], "gpt-4", True),
    ],
)
def test_allowlist(entries: list[str], alias: str, allowed: bool) -> None:
    assert Allowlist.compile(entries).allows(alias) is allowed


# --- ResourceIndex -------------------------------------------------------------------------


def index_of(*records: Record) -> ResourceIndex:
    return ResourceIndex.from_records(records)


POLICIES = [
    Record(
        "rate_limit_policies",
        "rl-key",
        {
            "name": "rk",
            "scope": "api_key",
            "scope_ref": "k1",
            "window": "minute",
            "max_requests": 1,
        },
        1,
    ),
    Record(
        "rate_limit_policies",
        "rl-model",
        {"name": "rm", "scope": "model", "scope_ref": "m1", "window": "minute", "max_requests": 1},
        1,
    ),
    Record(
        "budget_policies",
        "bp-pk",
        {
            "name": "bp",
            "scope": "provider_key",
            "scope_ref": "pk1",
            "limit_usd": 5,
            "period": "day",
        },
        1,
    ),
]


def test_referrers() -> None:
    index = index_of(
        pk(),
        direct("m1", "a"),
        direct("m2", "b"),
        routing("r1", "chat", "a"),
        api_key("k1", "p"),
        *POLICIES,
    )
    assert sorted(index.referrers("provider_keys", "pk1")) == [
        ("budget_policies", "bp-pk", "bp"),
        ("models", "m1", "a"),
        ("models", "m2", "b"),
    ]
    assert sorted(index.referrers("models", "m1")) == [
        ("models", "r1", "chat"),
        ("rate_limit_policies", "rl-model", "rm"),
    ]
    assert index.referrers("models", "m2") == []
    assert index.referrers("api_keys", "k1") == [("rate_limit_policies", "rl-key", "rk")]
    assert (
        describe_referrer("provider_keys", "pk1", ("models", "m1", "gpt-4o-prod"))
        == 'provider_keys "pk1" is referenced by models "m1" ("gpt-4o-prod")'
    )


def test_check_unique() -> None:
    index = index_of(pk(), direct("m1", "taken"), api_key("k1", "p", display_name="app"))
    clash = validate_value("models", direct("m2", "taken").value)
    with pytest.raises(Conflict, match='display_name "taken" already in use'):
        index.check_unique("models", "m2", clash)
    index.check_unique("models", "m1", clash)  # a PUT never clashes with itself
    with pytest.raises(Conflict, match="key_hash"):
        index.check_unique("api_keys", "k2", validate_value("api_keys", api_key("k2", "p").value))
    with pytest.raises(Conflict, match='display_name "app"'):
        other = api_key("k2", "q", display_name="app")
        index.check_unique("api_keys", "k2", validate_value("api_keys", other.value))
    index.check_unique("api_keys", "k3", validate_value("api_keys", api_key("k3", "r").value))


def test_check_rename() -> None:
    index = index_of(pk(), direct("m1", "a"), direct("m2", "b"), routing("r1", "chat", "a"))
    renamed = validate_value("models", direct("m1", "a2").value)
    with pytest.raises(Conflict) as caught:
        index.check_rename("m1", renamed)
    assert str(caught.value) == 'models "m1" is referenced by models "r1" ("chat")'
    index.check_rename("m1", validate_value("models", direct("m1", "a", timeout=5).value))
    index.check_rename("m2", validate_value("models", direct("m2", "b2").value))
    to_routing = validate_value("models", routing("m1", "a", "b").value)
    with pytest.raises(Conflict):
        index.check_rename("m1", to_routing)


def test_a_model_whose_target_cannot_be_built_is_rejected_and_the_rest_serves() -> None:
    """Issue 12 item 1: one bad resource must not fail the build (or every request)."""

    def factory(pk_entry: Any, model: Any) -> object:
        if model.display_name == "broken":
            raise ValueError("cannot build target")
        return object()

    records = [
        pk(),
        direct("m1", "good"),
        direct("m2", "broken"),
        routing("r1", "chat", "broken"),
        routing("r2", "chat-ok", "good"),
    ]
    snap = build_snapshot(records, revision=1, target_factory=factory)
    assert set(snap.models_by_id) == {"m1", "r2"}
    errors = rejected_ids(snap)
    assert set(errors) == {"m2", "r1"}
    assert "cannot build target" in errors["m2"]
    assert "broken" in errors["r1"]
    assert snap.models_by_alias["good"].target is not None
