"""PgBouncer in transaction pooling mode in front of the test PostgreSQL (tests/pg.py).

It listens on a free loopback port, passes the cluster's password through (scram), and
keeps a pool of two server connections, so clients really share them. Under root it runs
as the `postgres` user (PgBouncer refuses root), as this process's child.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.pg import PgCluster, _free_port

SEARCH = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
POOL_SIZE = 2
# What docs/replicas.md says a transaction pool needs: no prepared statement outlives its
# transaction (SQLAlchemy's cache and asyncpg's both off).
BOUNCED = "?prepared_statement_cache_size=0&statement_cache_size=0"


@dataclass(frozen=True)
class Bouncer:
    root: Path
    port: int
    cluster: PgCluster
    process: subprocess.Popen[bytes]

    def url(self, database: str, query: str = BOUNCED) -> str:
        password = self.cluster.password
        return f"postgresql+asyncpg://postgres:{password}@127.0.0.1:{self.port}/{database}{query}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next((p for p in SEARCH if Path(p).exists()), None)


def start_bouncer(binary: str, cluster: PgCluster) -> Bouncer:
    root = Path(tempfile.mkdtemp(prefix="sync-agent-bouncer-"))
    port = _free_port()
    (root / "users.txt").write_text(f'"postgres" "{cluster.password}"\n')
    (root / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host=127.0.0.1 port={cluster.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {root / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\n"
        "max_client_conn = 100\nquery_wait_timeout = 30\n"
    )
    user = "postgres" if os.geteuid() == 0 else None
    if user is not None:
        for path in (root, *root.iterdir()):
            shutil.chown(path, user, user)
    process = subprocess.Popen(
        [binary, str(root / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=user,
        group=user,
    )
    bouncer = Bouncer(root, port, cluster, process)
    _await_port(bouncer)
    return bouncer


def _await_port(bouncer: Bouncer) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if bouncer.process.poll() is not None:
            raise RuntimeError(f"PgBouncer exited with {bouncer.process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", bouncer.port), 1):
            return
        time.sleep(0.05)
    bouncer.stop()
    raise RuntimeError("PgBouncer did not listen within 20 s")
