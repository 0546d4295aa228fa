"""Who this process is among the replicas sharing a state database: its owner id for leases.

Every lease this process takes (a source's pass, a download job) names it by one id, drawn
once per process: a process that restarts is a new replica, and whatever its previous life
held is taken over once those leases expire (or at once on SQLite, where the instance lock
proves the previous process gone).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ReplicaId:
    """A replica's owner id (a uuid4 in hex), with where it runs, for people reading it."""

    value: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def __str__(self) -> str:
        return self.value


_current: ReplicaId | None = None


def current() -> ReplicaId:
    """This process's replica id (drawn at the first call; a forked child draws its own)."""
    global _current  # noqa: PLW0603 - one id per process is what a replica is
    if _current is None or _current.pid != os.getpid():
        _current = ReplicaId()
    return _current
