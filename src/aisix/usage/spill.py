"""The bounded spill file: batches the PostgreSQL ledger could not write, as JSON lines.

`append` adds one line unless the spill would grow past `max_bytes` (then the line is
refused: the oldest data is kept). Replay is claim-then-settle: `claim` moves the file aside
to `<path>.replay` (appends start a new file) and returns the lines waiting there; `settle`
writes back the lines not yet applied, or removes the file. Appends hold an exclusive
`flock`, so proxy workers sharing one path never interleave or lose lines. Batches carry ids
and are applied at most once, so a line replayed twice (two workers, a crash) is harmless.
Every call blocks (file I/O): the ledger runs them in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class SpillFile:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.replay_path = path.with_name(path.name + ".replay")
        self.max_bytes = max_bytes

    def size(self) -> int:
        """Bytes waiting for replay (the open spill and the claimed one)."""
        return _size(self.path) + _size(self.replay_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """The current spill file, opened for append and exclusively locked."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    current = False
                if current:  # not renamed away by a claim while we waited for the lock
                    yield fd
                    return
            finally:
                os.close(fd)

    def append(self, line: bytes) -> bool:
        """Add one line; False (nothing written) if the spill would exceed `max_bytes`."""
        with self._locked() as fd:
            if os.fstat(fd).st_size + _size(self.replay_path) + len(line) > self.max_bytes:
                return False
            os.write(fd, line)
            os.fsync(fd)
            return True

    def claim(self) -> list[bytes]:
        """The lines waiting for replay, oldest first."""
        if not self.replay_path.exists() and _size(self.path) > 0:
            with self._locked():
                if not self.replay_path.exists():
                    os.rename(self.path, self.replay_path)
        try:
            data = self.replay_path.read_bytes()
        except FileNotFoundError:
            return []
        return [line + b"\n" for line in data.split(b"\n") if line.strip()]

    def settle(self, remaining: list[bytes]) -> None:
        """After a replay: keep `remaining` for the next one, or drop the claimed file."""
        if not remaining:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.replay_path)
            return
        tmp = self.replay_path.with_name(self.replay_path.name + f".{os.getpid()}")
        with open(tmp, "wb") as out:
            out.write(b"".join(remaining))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.replay_path)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
