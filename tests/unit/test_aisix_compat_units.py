"""AISIX drop-in pieces that are pure functions (issue 14): provider families, tolerant loads,
rewrite templates, and the snapshot export document."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from aisix.loader import adapter_was_explicit, build_snapshot, tolerant_validate
from aisix.providers.family import effective_adapter
from aisix.providers.registry import build_target
from aisix.resources import ProviderKey, ResourceInvalid
from aisix.settings_compat import compile_rewrite_template
from aisix.snapshot import Record
from aisix.store.export import export_document
from aisix.store.file import load_resources_file


def key(**fields: Any) -> ProviderKey:
    return ProviderKey.model_validate({"display_name": "k", "secret": "s", **fields})


@pytest.mark.parametrize(
    ("label", "explicit", "adapter", "expected"),
    [
        ("anthropic", False, "openai", "anthropic"),
        ("gemini", False, "openai", "gemini"),
        ("vertex", False, "openai", "vertex"),
        ("bedrock", False, "openai", "bedrock"),
        ("azure", False, "openai", "azure-openai"),
        ("openai", False, "openai", "openai"),
        ("deepseek", False, "openai", "openai"),
        ("anthropic", True, "openai", "openai"),  # an explicit adapter always wins
    ],
)
def test_provider_label_implies_the_adapter_unless_explicit(
    label: str, explicit: bool, adapter: str, expected: str
) -> None:
    fields = {"adapter": adapter, "api_base": "http://x/v1"} if explicit else {}
    assert effective_adapter(key(**fields), label, explicit) == expected


def test_adapter_explicit_is_read_from_the_raw_stored_value() -> None:
    assert adapter_was_explicit({"display_name": "k"}) is False
    assert adapter_was_explicit({"adapter": "openai"}) is False  # materialised default
    assert adapter_was_explicit({"adapter": "openai", "api_base": "http://vllm/v1"}) is True
    assert adapter_was_explicit({"adapter": "anthropic"}) is True


def test_build_target_follows_the_family_rule() -> None:
    records = [
        Record("provider_keys", "pk", {"display_name": "k", "secret": "s"}, 1),
        Record(
            "models",
            "m1",
            {
                "display_name": "claude",
                "provider": "anthropic",
                "model_name": "claude-x",
                "provider_key_id": "pk",
            },
            1,
        ),
        Record(
            "models",
            "m2",
            {
                "display_name": "gpt",
                "provider": "openai",
                "model_name": "g",
                "provider_key_id": "pk",
            },
            1,
        ),
    ]
    snap = build_snapshot(records, 1, None, build_target)
    assert snap.provider_keys["pk"].adapter_explicit is False
    claude, gpt = snap.models_by_id["m1"].target, snap.models_by_id["m2"].target
    assert claude is not None and claude.adapter == "anthropic"  # implied by the label
    assert gpt is not None and gpt.adapter == "openai"


def test_tolerant_validation_drops_unknown_fields_and_names_them() -> None:
    raw = {
        "display_name": "m",
        "routing": {"targets": [{"model": "a", "weight": 2, "sticky": True}], "new_knob": 1},
        "labels": {"team": "x"},
    }
    value, dropped = tolerant_validate("models", raw)
    assert sorted(dropped) == ["labels", "routing.new_knob", "routing.targets[0].sticky"]
    assert value.routing.targets[0].weight == 2  # type: ignore[union-attr]
    assert "labels" in raw  # the stored value itself is untouched
    with pytest.raises(ResourceInvalid, match="missing field"):
        tolerant_validate("models", {"display_name": "m", "future": 1})


def test_tolerant_snapshot_counts_partially_compatible_fields() -> None:
    sha = hashlib.sha256(b"k").hexdigest()
    records = [
        Record("api_keys", "a1", {"key_hash": sha, "allowed_models": [], "quota_v2": 1}, 1),
        Record("api_keys", "a2", {"key_hash": "0" * 64, "allowed_models": [], "quota_v2": 2}, 1),
    ]
    strict = build_snapshot(records, 1)
    assert {r.id for r in strict.rejected} == {"a1", "a2"}
    tolerant = build_snapshot(records, 1, tolerant=True)
    assert tolerant.rejected == () and set(tolerant.api_keys) == {"a1", "a2"}
    assert tolerant.partially_compatible == (("api_keys", "quota_v2", 2),)


def test_rewrite_templates_expand_groups_and_refuse_bad_ones() -> None:
    pattern = re.compile(r"^/mcp-servers/(?P<server>[^/]+)/(mcp)$")
    template = compile_rewrite_template("/x/${server}/$2-$$", pattern)
    match = pattern.search("/mcp-servers/github/mcp")
    assert match is not None and template.expand(match) == "/x/github/mcp-$"
    for bad, reason in [("/x/$3", "unknown capture group"), ("/x/$1a", "unknown"),
                        ("/x?y", "may not contain"), ("/a b", "may not contain")]:  # fmt: skip
        with pytest.raises(ValueError, match=reason):
            compile_rewrite_template(bad, pattern)


def test_export_document_loads_back_with_the_same_values(tmp_path: Path) -> None:
    records = [
        Record(
            "provider_keys",
            "pk-1",
            {"display_name": "Main $key", "secret": "sk-$ecret", "adapter": "openai"},
            3,
        ),
        Record(
            "models",
            "m-1",
            {
                "display_name": "gpt",
                "provider": "openai",
                "model_name": "gpt-4o",
                "provider_key_id": "pk-1",
            },
            1,
        ),
        Record("api_keys", "ak-1", {"key_hash": "a" * 64, "allowed_models": ["gpt"]}, 1),
        Record(
            "budget_policies",
            "bp-1",
            {"name": "b", "scope": "model", "scope_ref": "m-1", "limit_usd": 5, "period": "day"},
            1,
        ),
    ]
    exported = export_document(records)
    assert list(exported.secrets.values()) == ["sk-$ecret"]
    path = tmp_path / "resources.yaml"
    path.write_text(yaml.safe_dump(exported.document))
    assert "sk-$ecret" not in path.read_text()
    loaded, problems = load_resources_file(path, exported.secrets)
    assert problems == []
    by_kind = {r.kind: r for r in loaded}
    assert by_kind["provider_keys"].value["secret"] == "sk-$ecret"
    assert by_kind["provider_keys"].value["display_name"] == "Main $key"
    assert by_kind["models"].value["provider_key_id"] == by_kind["provider_keys"].id
    assert by_kind["budget_policies"].value["scope_ref"] == by_kind["models"].id
    assert by_kind["api_keys"].value["display_name"] == "ak-1"
    assert exported.notes == ['api_keys "ak-1": exported with display_name = its id']
