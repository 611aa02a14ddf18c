"""Maps a provider key's `adapter` to the class that builds its upstream targets."""

from __future__ import annotations

from aisix.providers.base import UpstreamTarget
from aisix.providers.family import effective_adapter
from aisix.providers.openai import OpenAITarget
from aisix.resources import DirectModel, ProviderKey
from aisix.snapshot import ProviderKeyEntry


def build_target(key: ProviderKeyEntry, model: DirectModel) -> UpstreamTarget | None:
    """The upstream target for one single-target model; None for adapters not built yet."""
    value: ProviderKey = key.value
    if effective_adapter(value, model.provider, key.adapter_explicit) == "openai":
        return OpenAITarget(value, model)
    return None
