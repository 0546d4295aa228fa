"""The free-space guard: a reserve that fits the volume, and a message that says what to change."""

from __future__ import annotations

from transfer_kit import SOURCE, World, payload

from agent.agent import Agent
from agent.config import parse_config
from agent.models import PassStats
from agent.transfer.files import Volume, reserve, space_shortfall

MB, GIB = 1_000_000, 1 << 30


def test_the_default_reserve_is_5_percent_of_the_volume_at_most_1_gib() -> None:
    assert reserve(500 * MB, None) == 25 * MB  # a small sidecar volume keeps downloading
    assert reserve(100 * GIB, None) == GIB
    assert reserve(100 * GIB, 5 * MB) == 5 * MB  # an explicit setting wins
    assert reserve(500 * MB, 0) == 0


def test_a_download_that_fits_above_the_reserve_goes_ahead() -> None:
    volume = Volume(free=100 * MB, size=500 * MB)
    assert space_shortfall(volume, remaining=70 * MB, setting=None) is None
    assert space_shortfall(Volume(free=0, size=500 * MB), remaining=GIB, setting=0) is None


def test_the_message_names_the_setting_and_the_numbers() -> None:
    volume = Volume(free=30 * MB, size=500 * MB)
    message = space_shortfall(volume, remaining=10 * MB, setting=None)
    assert message is not None
    assert "agent.min_free_space" in message
    assert "28.6 MiB free" in message  # 30 MB
    assert "33.4 MiB needed" in message  # 10 MB to download + 25 MB kept free
    assert "23.8 MiB kept free" in message
    assert "default: 5 % of the volume, at most 1 GiB" in message
    explicit = space_shortfall(volume, remaining=10 * MB, setting=GIB)
    assert explicit is not None
    assert "1.0 GiB kept free by agent.min_free_space, as set" in explicit


async def test_a_held_download_fails_the_pass_with_the_setting_to_change(world: World) -> None:
    world.add("big.bin", payload(1000, seed=60))
    world.agent_options["min_free_space"] = "1000T"
    outcome = await world.sync()
    assert isinstance(outcome, PassStats)
    assert outcome.failed == 1
    (error,) = outcome.errors
    assert "not enough free space" in error
    assert "agent.min_free_space" in error
    assert not (world.mirror / "sm" / "big.bin").exists()


async def test_without_a_setting_the_default_reserve_lets_downloads_through(world: World) -> None:
    world.add("small.bin", payload(1000, seed=61))
    raw = world.raw_config()
    del raw["agent"]["min_free_space"]  # the kit turns the guard off; the default applies here
    config = parse_config(raw, env={})
    assert config.agent.min_free_space is None
    async with Agent.open(config, sleep=world.sleeps) as agent:
        outcome = (await agent.sync_once([SOURCE]))[SOURCE]
    assert isinstance(outcome, PassStats)
    assert outcome.downloaded == 1
