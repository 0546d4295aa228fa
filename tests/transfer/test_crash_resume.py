"""A `sync` killed mid-download resumes from its partial and wastes almost nothing."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import pytest
from transfer_kit import World, payload

from agent.transfer.download import READ_BUFFER

MIB = 1024 * 1024
SIZE = 48 * MIB


async def _cli_sync(world: World) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "--config",
        str(world.write_config()),
        "sync",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _wait_for_partial(world: World, process: asyncio.subprocess.Process, size: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        parts = list(world.staging.glob("*.part")) if world.staging.is_dir() else []
        if parts and parts[0].stat().st_size >= size:
            return parts[0].stat().st_size
        assert process.returncode is None, "sync ended before it could be killed"
        await asyncio.sleep(0.05)
    raise AssertionError("the partial never grew")


@pytest.mark.slow
async def test_sigkill_mid_download_then_rerun_fetches_each_byte_about_once(
    world: World,
) -> None:
    world.add("large.bin", payload(SIZE, seed=20))
    world.storage.faults.bytes_per_second = 12 * MIB  # about four seconds for the whole file

    first = await _cli_sync(world)
    await _wait_for_partial(world, first, 8 * MIB)
    await asyncio.sleep(0.2)  # ~2.4 MiB more on the wire: kill between writes, not after one
    first.send_signal(signal.SIGKILL)
    await first.wait()
    kept = next(world.staging.glob("*.part")).stat().st_size
    assert 8 * MIB <= kept < SIZE

    world.storage.faults.bytes_per_second = None
    second = await _cli_sync(world)
    assert await asyncio.wait_for(second.wait(), 60) == 0

    await world.assert_exact()
    resumed = world.storage.log.matching("GET", "/b/")[-1].headers.get("range", "")
    assert resumed.startswith("bytes=")
    assert int(resumed.removeprefix("bytes=").rstrip("-")) >= kept
    assert world.storage.bytes_sent <= SIZE + READ_BUFFER + SIZE // 100
