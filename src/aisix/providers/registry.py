"""Maps a provider key's `adapter` to the factory that builds its providers (one per model)."""

from __future__ import annotations

from collections.abc import Callable

from aisix.providers import gemini, openai, vertex
from aisix.providers.base import Provider, TLSConfig
from aisix.resources import DirectModel, ProviderKey
from aisix.snapshot import ProviderKeyEntry

Factory = Callable[[ProviderKey, DirectModel, TLSConfig], Provider]

FACTORIES: dict[str, Factory] = {
    "openai": openai.build_provider,
    "gemini": gemini.build_provider,
    "vertex": vertex.build_provider,
}
try:  # the optional extra aisix[bedrock] (botocore)
    import botocore  # noqa: F401

    from aisix.providers import bedrock

    FACTORIES["bedrock"] = bedrock.build_provider
except ImportError:  # pragma: no cover - a bedrock key is refused at validation then
    pass


def build_target(key: ProviderKeyEntry, model: DirectModel) -> Provider | None:
    """The provider for one single-target model; None for adapters not built yet."""
    value: ProviderKey = key.value
    factory = FACTORIES.get(value.adapter)
    if factory is None:
        return None
    return factory(value, model, openai.tls_config(value))
