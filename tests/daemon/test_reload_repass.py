"""A reload that lands while a pass is finishing still starts the pass it asks for, under
the new configuration, as soon as that pass ends (the daemon in process, its passes gated)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from agent.config import load_config
from agent.daemon import Daemon
from tests.daemon.test_daemon import DOCS, ENV, World, mirror_files, until, world
from tests.daemon.test_filter_reload import write

pytestmark = pytest.mark.e2e
__all__ = ["world"]  # the fixture, shared with the daemon's other tests


class GatedDaemon(Daemon):
    """The daemon, held after its first pass has let the source go and before the pass
    task ends (it publishes its status then): the window a reload may land in."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.finishing = asyncio.Event()
        self.go_on = asyncio.Event()

    async def _publish_status(self) -> None:
        if not self.finishing.is_set():
            self.finishing.set()
            await self.go_on.wait()
        await super()._publish_status()


async def test_a_reload_during_a_finishing_pass_starts_its_pass_when_that_one_ends(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP's reload while the first pass is finishing: no pass is asked for by hand, yet
    the new filter's pass runs (and removes the files) right after the first one ends."""
    for variable, value in ENV.items():
        monkeypatch.setenv(variable, value)
    write(world)
    daemon = GatedDaemon(load_config(world.config), world.config)
    running = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.finishing.wait(), 60)
        assert len(mirror_files(world, "a")) == DOCS
        write(world, exclude=["**"], on_filter_exclude="remove")
        await daemon.reload()
        daemon.go_on.set()
        await until(lambda: not mirror_files(world, "a"), timeout=30, what="the reload's pass")
    finally:
        daemon.go_on.set()
        daemon.stop_requested.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(running, 30)
    assert running.result() == 0
