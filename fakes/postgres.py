"""A real, throwaway PostgreSQL server for tests: own data dir, own port, own socket dir.

Not a fake: the real server, started from whichever binaries the machine has, so the
engagement store, the webhook spool and Meltano's state are tested against what users run.
- Binaries (`postgres_bin_dir`): `initdb` and `pg_ctl` on PATH, else the newest
  /usr/lib/postgresql/*/bin (Debian's packages), else the ones the `pgserver` wheel ships
  (a dev dependency on Linux x86_64 and macOS), so a clean clone needs no system package.
  POSTGRES_BINARIES=wheel skips the machine's own (to test that path), a folder names them.
- Root: initdb refuses to run as root, so the server runs as `nobody` when the euid is 0.
- Speed: no fsync, no full-page writes; a test that SIGKILLs a client loses nothing by it
  (only an OS crash would), and the data dir is deleted at the end anyway.
- One server per test session (`PostgresServer`), one fresh database per test
  (`PostgresServer.create_database`, dropped with `drop_database`).
Run `python -m fakes.postgres` to start one by hand; it prints its URL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

BINARIES_ENV = "POSTGRES_BINARIES"  # "auto" (default), "system", "wheel", or a folder
SUPERUSER = "postgres"
_TUNING = {
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "200",  # tests run receivers, targets and Meltano side by side
    "shared_buffers": "32MB",
}


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server binaries could be found or started on this machine."""


def _system_bin_dirs() -> Iterator[Path]:
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        yield Path(on_path).resolve().parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    yield from debian


def _wheel_bin_dir() -> Path | None:
    # Located, not imported: importing pgserver sets up its own server machinery.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def postgres_bin_dir() -> Path:
    """The folder holding `initdb`, `pg_ctl` and `postgres`, chosen as the module doc says."""
    choice = os.environ.get(BINARIES_ENV, "auto")
    candidates: list[Path | None] = []
    if choice not in ("auto", "system", "wheel"):
        candidates.append(Path(choice))
    if choice in ("auto", "system"):
        candidates.extend(_system_bin_dirs())
    if choice in ("auto", "wheel"):
        candidates.append(_wheel_bin_dir())
    for folder in candidates:
        if folder and all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresUnavailableError(
        f"no PostgreSQL server binaries ({BINARIES_ENV}={choice}): install Debian's "
        "postgresql package, or `pip install pgserver` (a dev dependency on Linux x86_64 "
        "and macOS), or set POSTGRES_BINARIES to the folder holding initdb and pg_ctl"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 and a socket dir.

    Use as a context manager (or `start` / `stop`); `url` is a libpq URL to its `postgres`
    database as the superuser, without a password (trust on loopback only).
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or postgres_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))  # short: socket paths are limited
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self.port = 0
        self._version = 0
        self._runas: dict[str, Any] = {}
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            nobody = pwd.getpwnam("nobody")
            self._runas = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            self.bin_dir = self._reachable_by_runas(self.bin_dir)

    def _reachable_by_runas(self, bin_dir: Path) -> Path:
        """`bin_dir`, or a copy of the wheel's installation in our folder if `nobody` cannot
        run it: the venv may sit under a folder only root enters (a clone in /root)."""
        with contextlib.suppress(OSError):  # the exec itself refused
            probe = subprocess.run(
                [str(bin_dir / "postgres"), "--version"], capture_output=True, check=False,
                cwd=self.root, **self._runas,
            )  # fmt: skip
            if probe.returncode == 0:
                return bin_dir
        # site-packages: the wheel's binaries find their libraries from there (RPATH
        # $ORIGIN/../../../pgserver.libs), so the copy keeps both at the same distance.
        site, copy = bin_dir.parents[2], self.root / "install"
        for part in (bin_dir.parent, site / "pgserver.libs"):
            if part.is_dir():
                shutil.copytree(part, copy / part.relative_to(site), symlinks=True)
        for folder in (copy, *(p for p in copy.rglob("*") if p.is_dir())):
            folder.chmod(0o755)
        return copy / bin_dir.relative_to(site)

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return "127.0.0.1"

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for `database` on this server (works for SQLAlchemy too, see store)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def _run(self, name: str, *args: str, timeout: float = 60) -> None:
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        result = subprocess.run(
            [str(self.bin_dir / name), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            env=env,
            check=False,
            **self._runas,
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise PostgresUnavailableError(
                f"{name} {' '.join(args)} failed ({result.returncode}) with {self.bin_dir}:\n"
                f"{result.stdout}{result.stderr}{log}"
            )

    def start(self) -> PostgresServer:
        """initdb, then start the server on a free port; retried if the port was taken."""
        self.sockets.mkdir()
        if self._runas:
            os.chown(self.sockets, self._runas["user"], self._runas["group"])
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
                  "-E", "UTF8", "--no-locale", "-N")  # fmt: skip
        for attempt in range(5):
            self.port = free_port()
            options = [f"-c {k}={v}" for k, v in _TUNING.items()]
            options += [f"-p {self.port}", "-h 127.0.0.1", f"-k {self.sockets}"]
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                          "-t", "60", "-o", " ".join(options), "start")  # fmt: skip
                return self
            except PostgresUnavailableError:
                if attempt == 4:
                    raise
        return self

    def stop(self) -> None:
        """Stop the server at once (nothing in it is kept) and delete its folder."""
        if self.port and (self.data / "postmaster.pid").exists():
            with contextlib.suppress(PostgresUnavailableError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def execute(self, sql: str, database: str = "postgres") -> Any:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that); the
        first row it returned, if any."""
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(sql.encode())
            return cursor.fetchone() if cursor.description else None

    @property
    def version(self) -> int:
        """The server's version as a number, e.g. 150018 for 15.18."""
        if not self._version:
            self._version = int(self.execute("SHOW server_version_num")[0])
        return self._version

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        # FILE_COPY (PostgreSQL 15+) copies a few files: 3x faster than WAL_LOG without fsync.
        strategy = " STRATEGY FILE_COPY" if self.version >= 150000 else ""
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0{strategy}')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of `url`, disconnecting whoever still uses it."""
        name = url.rsplit("/", 1)[1]
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    """Start a server until Ctrl-C, printing its URL (for trying the store by hand)."""
    with PostgresServer() as server:
        print(server.url(), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
