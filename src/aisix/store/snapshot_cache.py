"""The on-disk snapshot cache (`managed.snapshot_cache_path`): serve the last good resources
when the store cannot be reached at boot.

After every snapshot built from the store, `write_cache` stores its valid records (provider
secrets included, so the file is created 0600 and replaced atomically) with the store
revision. At boot, when the first load fails, `read_cache` gives those records back so the
gateway serves them until the store answers. A missing, unreadable or foreign file is
ignored (logged), never fatal.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import orjson

from aisix.snapshot import Record, Snapshot

log = logging.getLogger("aisix.snapshot_cache")
CACHE_FORMAT = 1


def write_cache(path: Path, snapshot: Snapshot, location: str) -> None:
    """Write the snapshot's records to `path` (0600, atomic rename); blocking: run in a thread."""
    records = [
        {"kind": r.kind, "id": r.id, "value": r.value, "revision": r.revision}
        for by_id in snapshot.records.values()
        for r in by_id.values()
    ]
    document = {
        "format": CACHE_FORMAT,
        "source": location,
        "revision": snapshot.revision,
        "written_at": time.time(),
        "records": records,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(orjson.dumps(document))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_cache(path: Path, location: str) -> tuple[list[Record], int] | None:
    """The cached records and revision, or None when there is no usable cache for `location`."""
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("snapshot cache %s ignored: %s", path, exc)
        return None
    if not isinstance(document, dict) or document.get("format") != CACHE_FORMAT:
        log.warning("snapshot cache %s ignored: not a snapshot cache file", path)
        return None
    if document.get("source") != location:
        log.warning("snapshot cache %s ignored: written for %s", path, document.get("source"))
        return None
    try:
        records = [
            Record(str(r["kind"]), str(r["id"]), dict(r["value"]), int(r["revision"]))
            for r in document["records"]
        ]
        return records, int(document["revision"])
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("snapshot cache %s ignored: %s", path, exc)
        return None
