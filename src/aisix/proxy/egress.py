"""Which egress proxy an upstream call goes through (`upstream.proxy`, opt-in).

Built only when the bootstrap config names a proxy (`upstream.proxy.url` or `from_env`), so
the default path does nothing per request. Every provider key uses it unless the key says
`egress_proxy: false`; with `upstream.proxy.only_opted_in: true`, only keys that say
`egress_proxy: true` do. `NO_PROXY` / `no_proxy` hosts go direct. Answers are cached per
model revision and URL.
"""

from __future__ import annotations

from aisix.settings import UpstreamProxy
from aisix.snapshot import ModelEntry
from aisix.transport.proxy import proxy_for

_CACHE_LIMIT = 4096


class Egress:
    __slots__ = ("_cache", "_settings")

    def __init__(self, settings: UpstreamProxy) -> None:
        self._settings = settings
        self._cache: dict[tuple[str, int, str], str | None] = {}

    @staticmethod
    def configured(settings: UpstreamProxy) -> bool:
        return settings.url is not None or settings.from_env

    def proxy(self, target: ModelEntry, url: str) -> str | None:
        key = (target.id, target.revision, url)
        if key in self._cache:
            return self._cache[key]
        found = self._resolve(target, url)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = found
        return found

    def _resolve(self, target: ModelEntry, url: str) -> str | None:
        choice = target.provider_key.value.egress_proxy if target.provider_key else None
        if choice is False or (choice is None and self._settings.only_opted_in):
            return None
        return proxy_for(url, self._settings)
