"""The ResourceStore protocol every resource source implements.

A store persists `Record`s (kind, id, stored value, per-resource revision). Writes go through
`transact`, which runs a caller-supplied function against a consistent view of every record
and commits what it wrote atomically, so the admin API's reference and uniqueness checks can
never race a concurrent write. `changes()` yields a new store revision whenever anything
changed (this process or another); the supervisor reloads the snapshot on each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

from aisix.snapshot import Record

T = TypeVar("T")


class StoreUnavailable(RuntimeError):
    """The store could not be reached or did not commit (admin 503)."""


class ReadOnlyStore(RuntimeError):
    """The store is file-managed: admin writes answer 405."""

    @classmethod
    def for_location(cls, location: str) -> ReadOnlyStore:
        return cls(f"resources are file-managed ({location}): edit the file and send SIGHUP")


class StoreTx(Protocol):
    def records(self) -> list[Record]: ...

    def get(self, kind: str, resource_id: str) -> Record | None: ...

    def put(self, kind: str, resource_id: str, value: dict[str, Any]) -> Record: ...

    def delete(self, kind: str, resource_id: str) -> bool: ...


class ResourceStore(Protocol):
    #: `sqlite`, `etcd` or `file` (status JSON `source.type`)
    source_type: str
    #: human-readable location (path or URL), never containing credentials
    location: str
    writable: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def load_all(self) -> tuple[list[Record], int]:
        """Every record in creation order, and the store revision they reflect."""
        ...

    async def list(self, kind: str, limit: int | None, offset: int) -> tuple[list[Record], int]:
        """One kind's records in creation order, paged, plus the kind's total."""
        ...

    async def get(self, kind: str, resource_id: str) -> Record | None: ...

    async def transact(self, fn: Callable[[StoreTx], T]) -> T:
        """Run `fn` in one atomic transaction; raise StoreUnavailable if it cannot commit."""
        ...

    def changes(self) -> AsyncIterator[int]:
        """Yield the store revision after every change, starting with none."""
        ...

    def connected(self) -> bool: ...
