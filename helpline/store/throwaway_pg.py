"""A private, disposable PostgreSQL cluster for tests and local benchmarks.

initdb + pg_ctl in a fresh temporary directory, listening only on a unix socket there (no TCP port to
clash with anything). As root, the server runs as the ``postgres`` user via ``runuser``. Blocking:
call it from synchronous fixture or script code, not from the event loop.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

_START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """PostgreSQL server binaries are not installed."""


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl (PATH first, then Debian's versioned dirs)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    hint = "apt-get install -y postgresql" + (" (CI=true: PostgreSQL is required)" if _in_ci() else "")
    raise PostgresUnavailable(f"PostgreSQL server binaries (initdb, pg_ctl) not found; install them: {hint}")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


class ThrowawayPostgres:
    """``with ThrowawayPostgres() as pg: url = pg.create_database()``; everything is deleted after."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.directory = Path(tempfile.mkdtemp(prefix="helpline-pg-"))
        self.datadir = self.directory / "data"
        self._as_postgres: list[str] = []
        self._started = False

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self._as_postgres, *args], capture_output=True, text=True, timeout=_START_TIMEOUT_S
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )

    def start(self) -> ThrowawayPostgres:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        options = f"-k {self.directory} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.directory / "server.log"),
            "-o", options, "-w", "-t", str(_START_TIMEOUT_S), "start",
        )  # fmt: skip
        self._started = True
        return self

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (asyncpg over the unix socket) for ``database``."""
        return f"postgresql+asyncpg://postgres@/{database}?host={self.directory}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self._run(
            str(self.bindir / "psql"), "-h", str(self.directory), "-U", "postgres", "-d", "postgres",
            "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{name}"',
        )  # fmt: skip
        return self.url(name)

    def stop(self) -> None:
        try:
            if self._started:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop")
        finally:
            self._started = False
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
