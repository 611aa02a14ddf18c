"""The read-only resources-file store: a declarative `resources.yaml` (contract §3.4).

`load_resources_file` runs the file through the one load pipeline: YAML → `${VAR}`
interpolation (`$$` is a literal `$`) → sugar (`provider_key: <name>`, `key_env: VAR`,
names as `scope_ref`) → `validate_value` → `build_snapshot` for references and uniqueness.
Every problem is collected and scoped like `models[2] ("gpt-4o"): ...`. Ids are UUIDv5 of
`"<segment>/<identity>"`, so they are stable across reloads. `FileStore` serves the records
through the `ResourceStore` protocol (never writable) and `reload()` (SIGHUP) swaps in a
valid file or raises with all problems, leaving the current records in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from aisix.loader import build_snapshot
from aisix.resources import KINDS, ResourceInvalid, stored_value, validate_value
from aisix.snapshot import Record
from aisix.store.base import ReadOnlyStore, StoreTx

T = TypeVar("T")

FORMAT_VERSION = "1"
ID_NAMESPACE = uuid.UUID("63e50ab2-677a-54d3-8d1e-c0cb29ceae94")
_TOP_LEVEL = frozenset({"_format_version", "apikeys", *KINDS})
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: policy scope → the section whose display names may be used as `scope_ref`
_SCOPE_SECTIONS = {"api_key": "api_keys", "model": "models", "provider_key": "provider_keys"}


class ResourcesFileError(ValueError):
    """The resources file is invalid; `problems` lists every problem, one line each."""

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__(f"resources file {path} is invalid: " + "; ".join(problems))
        self.problems = problems


def resource_id(kind: str, identity: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{kind}/{identity}"))


@dataclass(slots=True)
class _Entry:
    kind: str
    index: int
    raw: dict[str, Any]

    @property
    def name(self) -> str | None:
        name = self.raw.get("name" if self.kind.endswith("policies") else "display_name")
        return name if isinstance(name, str) and name else None

    @property
    def label(self) -> str:
        name = f' ("{self.name}")' if self.name is not None else ""
        return f"{self.kind}[{self.index}]{name}"


def validate_resources_file(path: str | os.PathLike[str], environ: Mapping[str, str]) -> list[str]:
    """Every problem of the resources file (empty when it is valid), for `aisix validate`."""
    return load_resources_file(path, environ)[1]


def load_resources_file(
    path: str | os.PathLike[str], environ: Mapping[str, str]
) -> tuple[list[Record], list[str]]:
    """The file's records (revision 0, assigned by the store) and its problems."""
    problems: list[str] = []
    document = _read_document(Path(path), problems)
    if document is None:
        return [], problems
    entries = _entries(document, problems)
    records: dict[tuple[str, str], tuple[_Entry, Record]] = {}
    failed: dict[int, str] = {}
    for entry in entries:
        error = _interpolate_entry(entry, environ)
        if error is not None:
            failed[id(entry)] = error
    names = {
        kind: {e.name: resource_id(kind, e.name) for e in entries if e.kind == kind and e.name}
        for kind in KINDS
    }
    for entry in entries:
        error = failed.get(id(entry)) or _desugar(entry, names, environ)
        if error is None:
            error = _to_record(entry, records)
        if error is not None:
            failed[id(entry)] = error
    entry_problems = [
        (KINDS.index(e.kind), e.index, f"{e.label}: {failed[id(e)]}")
        for e in entries
        if id(e) in failed
    ]
    snapshot = build_snapshot([record for _, record in records.values()], 0)
    for rejected in snapshot.rejected:
        entry = records[(rejected.kind, rejected.id)][0]
        label = f"{entry.label}: {rejected.error}"
        entry_problems.append((KINDS.index(entry.kind), entry.index, label))
    problems += [text for *_, text in sorted(entry_problems)]
    return [record for _, record in records.values()], problems


def _read_document(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"cannot read resources file {path}: {exc}")
        return None
    except yaml.YAMLError as exc:
        problems.append(f"resources file {path} is not valid YAML: {exc}")
        return None
    if not isinstance(loaded, dict):
        problems.append(f"resources file {path} must hold a mapping")
        return None
    version = loaded.get("_format_version")
    if version is None:
        problems.append('missing key "_format_version"')
    elif version != FORMAT_VERSION:
        problems.append(f'_format_version: must be "{FORMAT_VERSION}"')
    for key in loaded:
        if key not in _TOP_LEVEL:
            problems.append(f'unknown key "{key}"')
    if "apikeys" in loaded and "api_keys" in loaded:
        problems.append('only one of "api_keys" and "apikeys" may be given')
    return loaded


def _entries(document: dict[str, Any], problems: list[str]) -> list[_Entry]:
    entries: list[_Entry] = []
    for kind in KINDS:
        key = "apikeys" if kind == "api_keys" and "apikeys" in document else kind
        section = document.get(key)
        if section is None:
            continue
        if not isinstance(section, list):
            problems.append(f"{key}: must be a list")
            continue
        for index, raw in enumerate(section):
            if isinstance(raw, dict):
                entries.append(_Entry(kind, index, raw))
            else:
                problems.append(f"{kind}[{index}]: must be a mapping")
    return entries


def _interpolate_entry(entry: _Entry, environ: Mapping[str, str]) -> str | None:
    missing: list[str] = []
    entry.raw = _interpolate(entry.raw, environ, missing)
    if missing:
        return "; ".join(_unset(name) for name in dict.fromkeys(missing))
    return None


def _interpolate(node: Any, environ: Mapping[str, str], missing: list[str]) -> Any:
    if isinstance(node, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return "$"
            value = environ.get(name, "")
            if not value:
                missing.append(name)
            return value

        return _VARIABLE.sub(substitute, node)
    if isinstance(node, dict):
        return {key: _interpolate(value, environ, missing) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(value, environ, missing) for value in node]
    if isinstance(node, datetime):  # YAML reads unquoted timestamps as datetimes
        return node.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if node.tzinfo else str(node)
    if isinstance(node, date):
        return node.isoformat()
    return node


def _unset(name: str) -> str:
    return f'environment variable "{name}" is not set or empty'


def _desugar(
    entry: _Entry, names: dict[str, dict[str, str]], environ: Mapping[str, str]
) -> str | None:
    raw = entry.raw
    if entry.kind == "models" and "provider_key" in raw:
        if "provider_key_id" in raw:
            return 'only one of "provider_key" and "provider_key_id" may be given'
        name = raw.pop("provider_key")
        if not isinstance(name, str) or name not in names["provider_keys"]:
            return f'provider_key "{name}" is not defined'
        raw["provider_key_id"] = names["provider_keys"][name]
    if entry.kind == "api_keys":
        if entry.name is None:
            return 'missing field "display_name" (API keys in a resources file need one)'
        if "key_env" in raw:
            if "key_hash" in raw:
                return 'only one of "key_env" and "key_hash" may be given'
            variable = raw.pop("key_env")
            plaintext = environ.get(str(variable), "")
            if not plaintext:
                return _unset(str(variable))
            raw["key_hash"] = hashlib.sha256(plaintext.encode()).hexdigest()
    if entry.kind.endswith("policies"):
        section = _SCOPE_SECTIONS.get(str(raw.get("scope")))
        ref = raw.get("scope_ref")
        if section is not None and isinstance(ref, str) and ref in names[section]:
            raw["scope_ref"] = names[section][ref]
    return None


def _to_record(entry: _Entry, records: dict[tuple[str, str], tuple[_Entry, Record]]) -> str | None:
    try:
        value = validate_value(entry.kind, entry.raw)
    except ResourceInvalid as exc:
        return str(exc)
    assert entry.name is not None  # validation requires the identity field
    key = (entry.kind, resource_id(entry.kind, entry.name))
    if key in records:
        field_name = "name" if entry.kind.endswith("policies") else "display_name"
        return f'{field_name} "{entry.name}" already in use by another resource'
    records[key] = (entry, Record(entry.kind, key[1], stored_value(value), 0))
    return None


class FileStore:
    """A `ResourceStore` over one resources file; writes raise `ReadOnlyStore`."""

    source_type = "file"
    writable = False

    def __init__(self, path: Path, environ: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.location = str(path)
        self._environ = environ
        self._records: list[Record] = []
        self._by_key: dict[tuple[str, str], Record] = {}
        #: reload generation: 1 after the first load, +1 per reload that changed anything
        self.generation = 0
        self._changed: asyncio.Condition | None = None

    def _load(self) -> list[Record]:
        environ = os.environ if self._environ is None else self._environ
        records, problems = load_resources_file(self.path, environ)
        if problems:
            raise ResourcesFileError(self.location, problems)
        return records

    def _apply(self, records: list[Record]) -> bool:
        """Install `records`, keeping revisions of unchanged entries; True if anything changed."""
        fresh: list[Record] = []
        for record in records:
            old = self._by_key.get((record.kind, record.id))
            if old is not None and old.value == record.value:
                fresh.append(old)
            else:
                revision = old.revision + 1 if old is not None else 1
                fresh.append(Record(record.kind, record.id, record.value, revision))
        changed = self.generation == 0 or fresh != self._records
        self._records = fresh
        self._by_key = {(r.kind, r.id): r for r in fresh}
        if changed:
            self.generation += 1
        return changed

    async def open(self) -> None:
        """Load the file; raise ResourcesFileError (a startup error) when it is invalid."""
        self._changed = asyncio.Condition()
        self._apply(await asyncio.to_thread(self._load))

    async def reload(self) -> bool:
        """Re-read the file (SIGHUP). Invalid: raise ResourcesFileError, keep the old records."""
        changed = self._apply(await asyncio.to_thread(self._load))
        if changed and self._changed is not None:
            async with self._changed:
                self._changed.notify_all()
        return changed

    async def close(self) -> None:
        return None

    async def load_all(self) -> tuple[list[Record], int]:
        return list(self._records), self.generation

    async def list(self, kind: str, limit: int | None, offset: int) -> tuple[list[Record], int]:
        of_kind = [r for r in self._records if r.kind == kind]
        end = None if limit is None else offset + limit
        return of_kind[offset:end], len(of_kind)

    async def get(self, kind: str, resource_id: str) -> Record | None:
        return self._by_key.get((kind, resource_id))

    async def transact(self, fn: Callable[[StoreTx], T]) -> T:
        raise ReadOnlyStore.for_location(self.location)

    async def changes(self) -> AsyncIterator[int]:
        assert self._changed is not None, "open() first"
        seen = self.generation
        while True:
            async with self._changed:
                await self._changed.wait_for(self._moved_past(seen))
            seen = self.generation
            yield seen

    def _moved_past(self, seen: int) -> Callable[[], bool]:
        return lambda: self.generation != seen

    def connected(self) -> bool:
        return True
