"""The heartbeat of a replica's job leases: renew every held lease well before it runs out,
and tell the workers of each one that was lost (it ran out, or another replica took it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from agent.errors import StateError
from agent.log import get_logger
from agent.state.jobs import JobLease, Jobs

HEARTBEATS_PER_LEASE = 3


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """Who this replica is and how its leases run."""

    owner: str
    seconds: float  # a lease's length; heartbeats renew it three times as often
    poll: float  # seconds between claim attempts when there was nothing to claim


async def heartbeat(
    jobs: Jobs,
    settings: LeaseSettings,
    held: Callable[[], list[JobLease]],
    lost: Callable[[JobLease], None],
) -> None:
    """Renew the leases `held()` names, for ever; `lost(lease)` for each one not renewed.

    A failed renewal is tried again at the next beat, well within the lease.
    """
    while True:
        await asyncio.sleep(settings.seconds / HEARTBEATS_PER_LEASE)
        leases = held()
        if not leases:
            continue
        try:
            kept = await jobs.extend(leases, settings.seconds)
        except StateError as exc:
            get_logger().warning("job.heartbeat_failed", error=str(exc))
            continue
        for lease in leases:
            if lease.job_id not in kept:
                lost(lease)
