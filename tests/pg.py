"""A real PostgreSQL for the test session: initdb and pg_ctl in a temporary folder on loopback.

The server listens on 127.0.0.1 only, on a free port, with a random password (scram), and
without fsync (a test cluster is thrown away). PostgreSQL refuses to run as root, so under
root its commands run as the `postgres` user through `runuser`. Each test gets a fresh
database (`CREATE DATABASE`, tens of milliseconds); the cluster is stopped and its folder
deleted when the session ends.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from itertools import count
from pathlib import Path

import asyncpg

SEARCH_PATHS = ("/usr/lib/postgresql/*/bin",)  # Debian installs the server binaries there
START_ATTEMPTS = 3  # a free port can be taken between choosing and binding it
_databases = count(1)


@dataclass(frozen=True)
class PgCluster:
    root: Path
    port: int
    password: str
    bin_dir: Path
    prefix: tuple[str, ...]  # ("runuser", "-u", "postgres", "--") under root, else ()
    templates: set[str] = field(default_factory=set)  # template databases made so far

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    async def create_database(self, template: str = "template0") -> str:
        """A new database, a copy of `template` (empty by default); returns its name."""
        name = f"test_{os.getpid()}_{next(_databases)}"
        await self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    async def execute(self, statement: str, database: str = "postgres") -> None:
        conn = await asyncpg.connect(self.url(database, driver="postgresql"))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.prefix, str(self.bin_dir / tool), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's versioned folder."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    found = sorted(
        (p for pattern in SEARCH_PATHS for p in Path("/").glob(pattern.lstrip("/"))),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    usable = [p for p in found if (p / "initdb").exists() and (p / "pg_ctl").exists()]
    return usable[-1] if usable else None


def start_cluster(bin_dir: Path) -> PgCluster:
    """initdb a cluster in a temporary folder and start it on a free loopback port."""
    prefix: tuple[str, ...] = ()
    root = Path(tempfile.mkdtemp(prefix="sync-agent-pg-"))
    password = secrets.token_urlsafe(18)
    (root / "pw").write_text(password + "\n")
    if os.geteuid() == 0:
        prefix = ("runuser", "-u", "postgres", "--")
        for path in (root, root / "pw"):
            shutil.chown(path, "postgres", "postgres")
    cluster = PgCluster(root, 0, password, bin_dir, prefix)
    cluster._run(
        "initdb",
        "-D",
        str(root / "data"),
        "-U",
        "postgres",
        "--auth=scram-sha-256",
        f"--pwfile={root / 'pw'}",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    )
    return _started(cluster)


def _started(cluster: PgCluster) -> PgCluster:
    for attempt in range(START_ATTEMPTS):
        started = replace(cluster, port=_free_port())
        options = (
            f"-c listen_addresses=127.0.0.1 -p {started.port} -k {cluster.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        try:
            started._run(
                "pg_ctl",
                *("-D", str(cluster.root / "data"), "-l", str(cluster.root / "log")),
                *("-o", options, "-w", "-t", "60", "start"),
            )
        except subprocess.CalledProcessError:
            if attempt == START_ATTEMPTS - 1:
                log = (cluster.root / "log").read_text(errors="replace")[-2000:]
                cluster.stop()
                raise RuntimeError(f"PostgreSQL did not start:\n{log}") from None
            continue
        return started
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
