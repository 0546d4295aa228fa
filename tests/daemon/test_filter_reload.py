"""A filter changed by SIGHUP takes effect on the daemon's next pass, without a restart."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.daemon.test_daemon import (
    DOCS,
    World,
    daemon,
    mirror_files,
    status_of,
    until,
    world,
)
from tests.e2e.cli import write_config

pytestmark = pytest.mark.e2e
__all__ = ["world"]  # the fixture, shared with the daemon's other tests


def write(world: World, **filters: Any) -> None:
    settings = {
        "mirror_dir": str(world.mirror),
        "state_dir": str(world.tmp / "state"),
        "log_format": "json",
        "listen": world.listen,
    }
    write_config(world.config, settings, [{**world.source("a"), **filters}])


async def test_sighup_filter_change_applies_on_the_next_pass(world: World) -> None:
    """All documents are mirrored; a SIGHUP adding `exclude = ["**"]` with `remove` deletes every
    mirrored file on the pass the reload starts, and status names the rule for each."""
    write(world)
    async with daemon(world.config) as run:
        await until(lambda: len(mirror_files(world, "a")) == DOCS, what="first pass mirrored")
        write(world, exclude=["**"], on_filter_exclude="remove")
        run.signal(signal.SIGHUP)
        await until(lambda: run.events("reload.applied"), what="the reload")

        # the reload's own pass: at once, or right after a first pass still finishing
        await until(lambda: not mirror_files(world, "a"), timeout=60, what="files removed")
        source = (await status_of(world))["a"]
        assert source["skipped"] == DOCS
        assert {d["reason"] for d in source["skipped_documents"]} == {'filter: exclude "**"'}
        assert run.proc.returncode is None
