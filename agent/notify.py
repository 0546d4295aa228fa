"""systemd's notify protocol (READY, STATUS, WATCHDOG, ...) spoken directly, without libsystemd.

`Notifier` sends the sd_notify(3) datagrams to `$NOTIFY_SOCKET` (a path or an abstract
`@name`) and does nothing at all when the variable is unset, so the daemon calls it
unconditionally. `watchdog_loop` pings `WATCHDOG=1` from the event loop itself, so a stalled
loop stops the pings and systemd restarts the service.

Typical use in the daemon::

    async with Notifier(os.environ) as notifier:
        ...start everything...
        await notifier.ready("watching 3 sources")
        interval = watchdog_interval(os.environ)
        if interval:
            tasks.create_task(watchdog_loop(notifier, interval, engine.healthy))
        ...on SIGHUP: await notifier.reloading(); reload; await notifier.ready()
        ...on SIGTERM: await notifier.stopping(); shut down
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Protocol

from agent.log import get_logger

SEND_ATTEMPTS = 5
RETRY_DELAY = 0.01


def notify_address(value: str | None) -> str | None:
    """The AF_UNIX address for `$NOTIFY_SOCKET`: a path, or "\\0name" for "@name"."""
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: or relative addresses; systemd never hands those to a service


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of `$WATCHDOG_USEC`, or None if not asked for.

    `$WATCHDOG_PID`, when set, names the process the watchdog is meant for; another
    process (a child that inherited the environment) must not ping.
    """
    owner = environ.get("WATCHDOG_PID")
    if owner and owner.strip() != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class Notifier:
    """Sends sd_notify messages; every method is a no-op returning False when disabled."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = notify_address(env.get("NOTIFY_SOCKET"))
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    async def __aenter__(self) -> Notifier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def send(self, *assignments: str) -> bool:
        """Send one datagram of `KEY=value` lines; True if the kernel accepted it."""
        if self.address is None:
            return False
        data = "\n".join(assignments).encode()
        sock = self._socket()
        for attempt in range(SEND_ATTEMPTS):
            try:
                sock.sendto(data, self.address)
            except BlockingIOError:  # the receiver's queue is full: wait a little, never block
                await asyncio.sleep(RETRY_DELAY * 2**attempt)
            except OSError as exc:
                get_logger().warning("notify.failed", error=exc.strerror or str(exc))
                return False
            else:
                return True
        get_logger().warning("notify.dropped", reason="notify socket queue full")
        return False

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            self._sock = sock
        return self._sock

    async def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete."""
        extra = () if status is None else (_status(status),)
        return await self.send("READY=1", *extra)

    async def status(self, text: str) -> bool:
        return await self.send(_status(text))

    async def stopping(self) -> bool:
        return await self.send("STOPPING=1")

    async def watchdog(self) -> bool:
        return await self.send("WATCHDOG=1")

    async def reloading(self) -> bool:
        """A reload began; send `ready()` when it is done (Type=notify-reload semantics)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return await self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    async def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to start or stop than TimeoutStartSec/TimeoutStopSec allow."""
        return await self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())


class Pinger(Protocol):
    async def watchdog(self) -> bool: ...


def skip_reason(lag: float, max_lag: float, healthy: bool) -> str | None:
    """Why this watchdog tick must not ping, or None to ping."""
    if lag > max_lag:
        return "event loop stalled"
    if not healthy:
        return "agent unhealthy"
    return None


async def watchdog_loop(
    notifier: Pinger,
    interval: float,
    healthy: Callable[[], bool] = lambda: True,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_lag: Callable[[float], None] | None = None,
) -> None:
    """Ping WATCHDOG=1 every `interval` seconds while the loop runs on time and `healthy()`.

    Each tick measures how late the loop woke it; a tick late by more than `interval` means
    the loop was stalled, and it is not vouched for. Runs until cancelled.
    """
    due = clock()
    while True:
        lag = max(0.0, clock() - due)
        if on_lag is not None:
            on_lag(lag)
        reason = skip_reason(lag, interval, healthy())
        if reason is None:
            await notifier.watchdog()
        else:
            get_logger().warning("watchdog.skipped", reason=reason, lag=round(lag, 3))
        due = clock() + interval
        await sleep(interval)
