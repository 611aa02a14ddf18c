"""A real PostgreSQL server (Debian's `postgresql` package) on a free port for tests.

`PostgresServer().start()` runs `initdb` (trust auth, superuser `aisix`) in a fresh directory
under the system temp dir and starts `postgres` on 127.0.0.1 with durability off (a test
database, not a production one), waiting with a deadline until `pg_isready` answers. PostgreSQL
refuses to run as root, so under root both run as the `postgres` user the package creates
(else `nobody`) and the directory is handed to that user. `stop()` is a fast shutdown;
`start()` again reuses the same port and data, so a test can take the database away and bring
it back. `create_database()` makes an empty database and returns its DSN.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from fakes.process import wait_ready

START_DEADLINE_S = 30.0
SUPERUSER = "aisix"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bindir() -> Path:
    """The directory of `initdb` and `postgres`: Debian keeps them off PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return Path(os.path.realpath(initdb)).parent


def _version_key(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


def _run_as() -> tuple[Callable[[], None] | None, int | None, int | None]:
    """(preexec, uid, gid) for running the server: root hands it to an unprivileged user."""
    if os.geteuid() != 0:
        return None, None, None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return _dropper(user.pw_uid, user.pw_gid), user.pw_uid, user.pw_gid
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


def _dropper(uid: int, gid: int) -> Callable[[], None]:
    def drop() -> None:
        os.setgid(gid)
        os.setgroups([])
        os.setuid(uid)

    return drop


class PostgresServer:
    def __init__(self) -> None:
        self.bin = bindir()
        self.port = unused_port()
        self.directory = Path(tempfile.mkdtemp(prefix="aisix-pg-"))
        self.data = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._preexec, uid, gid = _run_as()
        if uid is not None and gid is not None:
            os.chown(self.directory, uid, gid)
        self._initdb()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _initdb(self) -> None:
        result = subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            preexec_fn=self._preexec,  # drops root before exec, nothing else
            capture_output=True,
            cwd=self.directory,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.decode(errors='replace')}")

    def start(self) -> PostgresServer:
        assert self.proc is None, "postgres already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        with log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.directory}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=50",
                ],
                preexec_fn=self._preexec,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
            )
        try:
            wait_ready(self.proc, self.ready, "postgres", START_DEADLINE_S)
        except RuntimeError as exc:
            self.proc = None
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}; log:\n{tail}") from None
        return self

    def ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with psql; return its unaligned, tuples-only output."""
        result = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(database),
                "-c",
                sql,
            ],
            capture_output=True,
            check=False,
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode().strip()

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open sessions are cut, as when a database goes away."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
