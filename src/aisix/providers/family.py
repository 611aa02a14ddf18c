"""Which wire family (adapter) serves a model: AISIX's "provider label implies adapter" rule.

AISIX picks the adapter from a model's `provider` label (`anthropic`, `gemini`, `vertex`,
`bedrock`, `azure`) when the provider key's `adapter` was left at its default; an explicit
`adapter` always wins. `adapter_explicit` is computed once at load from the raw stored
value (`aisix.loader.adapter_was_explicit`); the target factory calls `effective_adapter`.
"""

from __future__ import annotations

from collections.abc import Mapping

from aisix.resources import ProviderKey

#: model provider labels that imply a wire family, and the adapter each selects
IMPLIED_ADAPTERS: Mapping[str, str] = {
    "anthropic": "anthropic",
    "gemini": "gemini",
    "vertex": "vertex",
    "vertex_ai": "vertex",
    "bedrock": "bedrock",
    "azure": "azure-openai",
    "azure-openai": "azure-openai",
}


def effective_adapter(key: ProviderKey, model_provider: str, adapter_explicit: bool) -> str:
    """The adapter that serves a model with label `model_provider` through `key`."""
    if adapter_explicit:
        return key.adapter
    return IMPLIED_ADAPTERS.get(model_provider, key.adapter)
