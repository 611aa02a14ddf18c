"""Builds the provider of each single-target model: the adapter's factory, chosen by
`effective_adapter` (an explicit `adapter`, else the one a model's `provider` label implies),
with the process-wide upstream TLS (`upstream.tls`) joined to the key's own trust settings."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import partial
from pathlib import Path

from aisix.providers import anthropic, azure, gemini, openai, vertex
from aisix.providers.base import Provider, TLSConfig
from aisix.providers.family import effective_adapter
from aisix.resources import DirectModel, ProviderKey
from aisix.settings_compat import OutboundTLS
from aisix.snapshot import ProviderKeyEntry

Factory = Callable[[ProviderKey, DirectModel, TLSConfig], Provider]

FACTORIES: dict[str, Factory] = {
    "openai": openai.build_provider,
    "anthropic": anthropic.build_provider,
    "azure-openai": azure.build_provider,
    "gemini": gemini.build_provider,
    "vertex": vertex.build_provider,
}
if importlib.util.find_spec("botocore") is not None:  # the optional extra aisix[bedrock]
    # found, not imported: botocore (~20 MiB) loads only when a bedrock key is used
    from aisix.providers import bedrock

    FACTORIES["bedrock"] = bedrock.build_provider


class Registry:
    """The target factory the supervisor calls once per model per snapshot."""

    def __init__(
        self,
        upstream_tls: OutboundTLS | None = None,
        resolve: Callable[[str], Path] = Path,
        send: azure.Send | None = None,
    ) -> None:
        tls = upstream_tls or OutboundTLS()
        self._factories = dict(FACTORIES)
        if send is not None:  # token requests (Entra ID) through the gateway's own transport
            self._factories["azure-openai"] = partial(azure.build_provider, send=send)
        self.base_tls = TLSConfig(
            verify=tls.verify,
            ca_file=str(resolve(tls.ca_file)) if tls.ca_file else None,
            client_cert_file=str(resolve(tls.client_cert_file)) if tls.client_cert_file else None,
            client_key_file=str(resolve(tls.client_key_file)) if tls.client_key_file else None,
        )

    def tls_for(self, key: ProviderKey) -> TLSConfig:
        base = self.base_tls
        if key.tls is None:
            return base
        return TLSConfig(
            verify=base.verify and key.tls.verify,
            ca_cert=key.tls.ca_cert,
            ca_file=base.ca_file,
            client_cert_file=base.client_cert_file,
            client_key_file=base.client_key_file,
        )

    def build_target(self, key: ProviderKeyEntry, model: DirectModel) -> Provider | None:
        """The provider for one single-target model; None for adapters not built yet."""
        value: ProviderKey = key.value
        adapter = effective_adapter(value, model.provider, key.adapter_explicit)
        factory = self._factories.get(adapter)
        if factory is None:
            return None
        return factory(value, model, self.tls_for(value))


#: the default registry (no process-wide TLS), for `aisix validate` and tests
build_target = Registry().build_target
