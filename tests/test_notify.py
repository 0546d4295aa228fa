"""Tests for agent.notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from agent.notify import Notifier, notify_address, skip_reason, watchdog_interval, watchdog_loop


@dataclass
class Listener:
    """The systemd end of the protocol: a bound datagram socket and its NOTIFY_SOCKET value."""

    sock: socket.socket
    env_value: str

    async def receive(self, timeout: float = 2.0) -> tuple[float, str]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            data = await loop.sock_recv(self.sock, 4096)
        return time.monotonic(), data.decode()

    async def nothing(self, wait: float = 0.1) -> bool:
        try:
            await self.receive(wait)
        except TimeoutError:
            return True
        return False


def bound(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    return sock


@pytest.fixture
def listener() -> Iterator[Listener]:
    # A short private directory: AF_UNIX paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="notify-") as folder:
        path = os.path.join(folder, "notify.sock")
        sock = bound(path)
        yield Listener(sock, path)
        sock.close()


@pytest.fixture
async def notifier(listener: Listener) -> AsyncIterator[Notifier]:
    async with Notifier({"NOTIFY_SOCKET": listener.env_value}) as n:
        yield n


async def test_ready_status_stopping_arrive_as_datagrams(
    listener: Listener, notifier: Notifier
) -> None:
    assert await notifier.ready()
    assert (await listener.receive())[1] == "READY=1"
    assert await notifier.status("syncing 3 sources\nnow")
    assert (await listener.receive())[1] == "STATUS=syncing 3 sources now"
    assert await notifier.ready("idle")
    assert (await listener.receive())[1] == "READY=1\nSTATUS=idle"
    assert await notifier.stopping()
    assert (await listener.receive())[1] == "STOPPING=1"


async def test_reloading_carries_the_monotonic_clock_in_microseconds(
    listener: Listener, notifier: Notifier
) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    await notifier.reloading()
    lines = (await listener.receive())[1].split("\n")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


async def test_extend_timeout_and_watchdog_messages(listener: Listener, notifier: Notifier) -> None:
    await notifier.extend_timeout(45)
    assert (await listener.receive())[1] == "EXTEND_TIMEOUT_USEC=45000000"
    await notifier.watchdog()
    assert (await listener.receive())[1] == "WATCHDOG=1"


async def test_abstract_socket_name_is_reached() -> None:
    name = f"sync-agent-test-{uuid.uuid4().hex}"
    sock = bound("\0" + name)
    try:
        async with Notifier({"NOTIFY_SOCKET": "@" + name}) as n:
            assert await n.ready()
        assert (await Listener(sock, "@" + name).receive())[1] == "READY=1"
    finally:
        sock.close()


async def test_nothing_is_sent_when_notify_socket_is_unset(listener: Listener) -> None:
    async with Notifier({"WATCHDOG_USEC": "100000"}) as n:
        assert not n.enabled
        results = [await n.ready(), await n.status("x"), await n.watchdog(), await n.stopping()]
        results.append(await n.reloading())
        assert n._sock is None
    assert results == [False] * 5
    assert await listener.nothing()


async def test_a_vanished_socket_is_reported_not_raised() -> None:
    with tempfile.TemporaryDirectory(prefix="notify-") as folder:
        async with Notifier({"NOTIFY_SOCKET": os.path.join(folder, "gone.sock")}) as n:
            assert n.enabled
            assert await n.ready() is False


def test_notify_address_forms() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abstract") == "\0abstract"
    assert notify_address("") is None
    assert notify_address(None) is None
    assert notify_address("relative/path") is None
    assert notify_address("vsock:2:1234") is None


def test_watchdog_interval_is_half_the_period_and_respects_watchdog_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


async def test_watchdog_pings_reach_the_socket_at_half_the_period(listener: Listener) -> None:
    env = {"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "200000"}
    interval = watchdog_interval(env)
    assert interval == 0.1
    async with Notifier(env) as n, asyncio.TaskGroup() as tg:
        task = tg.create_task(watchdog_loop(n, interval))
        pings = [await listener.receive() for _ in range(4)]
        task.cancel()
    assert {text for _, text in pings} == {"WATCHDOG=1"}
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(pings)]
    assert all(0.08 <= gap <= 0.19 for gap in gaps), gaps


@dataclass
class FakeTime:
    """A clock and a sleep; `stalls` adds extra lateness to successive sleeps."""

    now: float = 100.0
    stalls: list[float] = field(default_factory=list)
    ticks_left: int = 5  # ticks run before the loop is stopped

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.ticks_left -= 1
        if self.ticks_left == 0:
            raise Finished
        self.now += seconds + (self.stalls.pop(0) if self.stalls else 0.0)


class Finished(Exception):
    pass


@dataclass
class CountingPinger:
    pings: list[float] = field(default_factory=list)
    clock: FakeTime | None = None

    async def watchdog(self) -> bool:
        self.pings.append(self.clock.now if self.clock else 0.0)
        return True


async def test_watchdog_skips_the_tick_after_a_stall_longer_than_the_interval() -> None:
    fake = FakeTime(stalls=[0.0, 2.5, 0.4])  # tick 3 is 2.5 s late, tick 4 only 0.4 s
    pinger = CountingPinger(clock=fake)
    lags: list[float] = []
    with pytest.raises(Finished):
        await watchdog_loop(pinger, 1.0, clock=fake.clock, sleep=fake.sleep, on_lag=lags.append)
    assert lags == pytest.approx([0.0, 0.0, 2.5, 0.4, 0.0])
    assert pinger.pings == pytest.approx([100.0, 101.0, 105.9, 106.9])


async def test_watchdog_stays_silent_while_unhealthy() -> None:
    fake = FakeTime()
    pinger = CountingPinger(clock=fake)
    health = iter([True, False, False, True, True])
    with pytest.raises(Finished):
        await watchdog_loop(pinger, 1.0, lambda: next(health), clock=fake.clock, sleep=fake.sleep)
    assert pinger.pings == [100.0, 103.0, 104.0]


def test_skip_reason_decides_from_lag_and_health() -> None:
    assert skip_reason(0.01, 1.0, healthy=True) is None
    assert skip_reason(1.5, 1.0, healthy=True) == "event loop stalled"
    assert skip_reason(0.0, 1.0, healthy=False) == "agent unhealthy"
