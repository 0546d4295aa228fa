"""Storage bodies received off the event loop: blocking HTTP/1.1 exchanges in worker threads.

`Receiver` is the event loop's side: it owns the worker threads and the kept-alive
connections, runs an `Exchange`'s blocking steps in a thread, paces them by the shared
bandwidth limit, and stops a transfer cleanly when its task is cancelled.

The storage hop (where a document's bytes come from after the API's redirect) is sent from
a worker thread with the standard library's `http.client` (TLS included): `Exchange.open`
sends the request and reads the head; after the event loop has judged the head, `pump`
receives the body in BLOCK-sized `readinto` calls, each followed by the write and the hash
of that block. Every expensive call (recv or SSL_read, write, hash) runs with the GIL
released, and the loop hears back once per head and once per checkpoint instead of once per
chunk. Measured against nginx on loopback (4,000 GETs of 4 KiB, 16 at a time, 2 busy CPUs):
1.45-1.52 s in 16 threads against 2.68-2.69 s with aiohttp on the loop, the same CPU time.

`Connections` keeps idle keep-alive connections per origin for the next exchange; a reused
connection the server closed meanwhile is replaced once, transparently (a GET is
idempotent). `abort` (from the loop, on cancellation) shuts the socket down so that a
blocked read returns at once, and a connect still under way gives up within CONNECT_POLL;
what was written until then stays in the file, counted in `written`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import http.client
import os
import select
import socket
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from agent.config.proxies import Proxies, Proxy
from agent.transfer import proxied
from agent.transfer.pacing import BandwidthLimiter
from agent.transfer.partial import Partial
from agent.transfer.proxied import Origin

BLOCK = 256 * 1024  # one readinto, write and hash; also what a SIGKILL can lose unwritten
WRITE_BACK_STEP = 16 * 1024 * 1024  # a body's writeback is started every this many bytes
CONNECT_TIMEOUT = 30.0
CONNECT_POLL = 0.1  # seconds a connect waits between looks at whether it was stopped
READ_TIMEOUT = 120.0  # between two reads, as the event loop's sessions
IDLE_PER_ORIGIN = 32
# A kept-alive connection the server closed while it sat idle fails this way on reuse.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)

T = TypeVar("T")
WriteAndHash = Callable[[BinaryIO, list[Any], Any], None]
Pace = Callable[[int], None]


class Receiver:
    """Worker threads and kept-alive connections for the storage hops; close when done."""

    def __init__(
        self, threads: int, bandwidth: BandwidthLimiter, proxies: Proxies | None = None
    ) -> None:
        self.bandwidth = bandwidth
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="receive")
        self._connections = Connections(proxies)

    def exchange(self, url: str, headers: Mapping[str, str]) -> Exchange:
        return Exchange(self._connections, url, headers)

    async def open(self, exchange: Exchange) -> tuple[int, CIMultiDictProxy[str]]:
        """Send the exchange's request and read its head in a worker thread.

        Cancelled, it stops the thread's exchange and waits for it, so that the connection
        it took is the exchange's to close (else it would be dropped open, mid-request).
        """
        return await self._in_thread(exchange, exchange.open)

    async def pump(
        self,
        exchange: Exchange,
        partial: Partial,
        limit: int,
        write_and_hash: WriteAndHash,
        *,
        min_seconds: float = 0.0,
    ) -> bool:
        """At least `limit` more body bytes, for at least `min_seconds`, into the partial's
        file, in a worker thread; True once the body is whole (which may come sooner).

        Cancelled, it stops the thread's transfer and waits for it, so that the file and
        `partial.offset` agree on what was kept.
        """
        start, written = partial.offset, exchange.written
        pace, block = self._pacer()
        work = functools.partial(
            _pump_file,
            exchange,
            partial,
            limit,
            write_and_hash,
            pace=pace,
            block=block,
            min_seconds=min_seconds,
        )
        try:
            return await self._in_thread(exchange, work)
        finally:
            partial.offset = start + exchange.written - written

    async def _in_thread(self, exchange: Exchange, work: Callable[[], T]) -> T:
        """`work` on `exchange` in a worker thread. Cancelled, it stops the exchange and
        waits for the thread, so that what the thread left is the caller's to settle."""
        future = asyncio.get_running_loop().run_in_executor(self._threads, work)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            exchange.abort()
            await asyncio.wait([future])
            if not future.cancelled():
                future.exception()  # its error is the abort's: mark it seen
            raise

    def _pacer(self) -> tuple[Pace | None, int]:
        """The bandwidth limit as a worker thread waits for it, and the block size to use
        (a tenth of a second's worth when limited, so that the pace stays even)."""
        rate = self.bandwidth.rate
        if not rate:
            return None, BLOCK
        loop = asyncio.get_running_loop()

        def pace(size: int) -> None:
            asyncio.run_coroutine_threadsafe(self.bandwidth.consume(size), loop).result()

        return pace, max(16 * 1024, min(BLOCK, rate // 10))

    def close(self) -> None:
        """Wait for the worker threads (every transfer has ended) and close idle connections."""
        self._threads.shutdown(wait=True)
        self._connections.close()


def _pump_file(
    exchange: Exchange,
    partial: Partial,
    limit: int,
    write_and_hash: WriteAndHash,
    *,
    pace: Pace | None,
    block: int,
    min_seconds: float,
) -> bool:
    """Append body bytes to the staging file (runs in a worker thread): see `Exchange.pump`."""
    with partial.path.open("ab" if partial.offset else "wb") as handle:
        return exchange.pump(
            handle,
            partial.digest,
            limit,
            write_and_hash=write_and_hash,
            pace=pace,
            block=block,
            min_seconds=min_seconds,
        )


def write_back(fd: int, offset: int, length: int) -> None:
    """Start writing a range of a large file to disk now, without waiting for it.

    Linux starts the writeback of the range's dirty pages for `POSIX_FADV_DONTNEED` (and
    drops its clean pages, which the agent does not read again), so the fsync before the
    rename finds a large download mostly on disk instead of flushing all of it at once:
    2 GiB from nginx on the busy VM, the fsync after the body took 3.0-3.4 s without it
    and 0.01-0.14 s with it, in 13.5-14.0 s against 13.6-19.2 s overall.
    """
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def connect_unless(
    stopped: Callable[[], bool],
    address: tuple[str, int],
    timeout: float | None = CONNECT_TIMEOUT,
    source_address: tuple[str, int] | None = None,
) -> socket.socket:
    """`socket.create_connection` that gives up as soon as `stopped()` says so.

    A blocking connect cannot be interrupted from another thread (neither `shutdown` nor
    `close` wakes it on Linux), and a storage host that drops packets would hold a cancelled
    transfer for the whole connect timeout. So each address is connected without blocking and
    waited for in short polls that look at `stopped` in between.
    """
    host, port = address
    error: OSError | None = None
    for family, kind, proto, _, addr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            if source_address is not None:
                sock.bind(source_address)
            _connect_polling(sock, addr, timeout, stopped)
        except OSError as exc:
            sock.close()
            if isinstance(exc, ConnectionAbortedError):
                raise
            error = exc
            continue
        sock.settimeout(timeout)
        return sock
    raise error if error is not None else OSError(f"no address found for {host}")


def _connect_polling(
    sock: socket.socket, addr: Any, timeout: float | None, stopped: Callable[[], bool]
) -> None:
    sock.setblocking(False)
    code = sock.connect_ex(addr)
    if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
        raise OSError(code, os.strerror(code))
    deadline = None if timeout is None else time.monotonic() + timeout
    poll = select.poll()
    poll.register(sock, select.POLLOUT)
    while code and not poll.poll(CONNECT_POLL * 1000):
        if stopped():
            raise ConnectionAbortedError("the transfer was stopped")
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError("timed out")
    if code and (code := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)):
        raise OSError(code, os.strerror(code))


class Connections:
    """Idle keep-alive connections per origin, shared by the worker threads."""

    def __init__(self, proxies: Proxies | None = None) -> None:
        self.proxies = proxies or Proxies()
        self._idle: defaultdict[Origin, list[http.client.HTTPConnection]] = defaultdict(list)
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def take(self, origin: Origin, proxy: Proxy | None) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to `origin` (and True), or a new one (and False)."""
        with self._lock:
            idle = self._idle[origin]
            if idle:
                return idle.pop(), True
        return self.fresh(origin, proxy), False

    def fresh(self, origin: Origin, proxy: Proxy | None) -> http.client.HTTPConnection:
        """A new, not yet connected connection to `origin` (through `proxy` if not None)."""
        tls = self._tls_context() if origin[0] == "https" else None
        return proxied.connection(origin, proxy, timeout=CONNECT_TIMEOUT, tls=tls)

    def give_back(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle[origin]
            if len(idle) < IDLE_PER_ORIGIN:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                self._tls = ssl.create_default_context()  # the system's CAs, as aiohttp's
            return self._tls


class Exchange:
    """One GET: its head once `open` returns, its body through `pump`, then `close`."""

    def __init__(self, connections: Connections, url: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        self.url = url
        self._origin: Origin = (parts.scheme, parts.hostname or "", parts.port)
        self._proxy = connections.proxies.for_url(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._target = proxied.request_target(self._origin, self._proxy, target)
        self._headers = {**headers, **proxied.forward_headers(self._origin, self._proxy)}
        self._connections = connections
        self._conn: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._aborted = False
        self.written = 0  # body bytes written to the file and hashed, across pump calls
        self._written_back = 0  # of which the writeback was started

    def open(self) -> tuple[int, CIMultiDictProxy[str]]:
        """Send the request and read the head: (status, headers). Runs in a worker thread."""
        conn, reused = self._connections.take(self._origin, self._proxy)
        self._conn = conn
        if self._aborted:  # stopped before the request went out
            raise ConnectionAbortedError("the transfer was stopped")
        try:
            self._response = self._send(conn, fresh=not reused)
        except STALE:
            conn.close()
            if not reused:
                raise
            self._conn = conn = self._connections.fresh(self._origin, self._proxy)
            self._response = self._send(conn, fresh=True)
        headers = CIMultiDictProxy(CIMultiDict(self._response.getheaders()))
        return self._response.status, headers

    def _send(self, conn: http.client.HTTPConnection, *, fresh: bool) -> http.client.HTTPResponse:
        if fresh:
            # http.client's hook for making the socket (socket.create_connection by default)
            conn._create_connection = functools.partial(  # type: ignore[attr-defined]
                connect_unless, lambda: self._aborted
            )
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(READ_TIMEOUT)
            if self._aborted:  # stopped while connecting, before `abort` saw a socket
                raise ConnectionAbortedError("the transfer was stopped")
        conn.request("GET", self._target, headers=self._headers)
        return conn.getresponse()

    def pump(
        self,
        handle: BinaryIO,
        digest: Any,
        limit: int,
        *,
        write_and_hash: WriteAndHash,
        pace: Pace | None = None,
        block: int = BLOCK,
        min_seconds: float = 0.0,
    ) -> bool:
        """Receive, write and hash at least `limit` bytes during at least `min_seconds`;
        True once the body is complete (which may end the call sooner).

        Runs in a worker thread. `pace(n)` is called after each block when a bandwidth
        limit applies (it may block). The writeback of what was written is started every
        WRITE_BACK_STEP and at the end of the body (`write_back`). Raises
        `http.client.HTTPException` or `OSError` when the body breaks off; `written` counts
        what reached the file either way.
        """
        response = self._response
        assert response is not None, "pump before open"
        buffer = memoryview(bytearray(block))
        done, until = 0, time.monotonic() + min_seconds
        while done < limit or (min_seconds and time.monotonic() < until):
            n = response.readinto(buffer)
            if n == 0:
                break
            write_and_hash(handle, [buffer[:n]], digest)
            self.written += n
            done += n
            if self.written - self._written_back >= WRITE_BACK_STEP:
                self._write_back(handle)
            if pace is not None:
                pace(n)
        if self._aborted:
            raise ConnectionAbortedError("the transfer was stopped")
        if not response.isclosed():
            return False
        self._write_back(handle)  # whole: its fsync in the commit batch finds it on its way
        self._release()
        return True

    def _write_back(self, handle: BinaryIO) -> None:
        """Start the writeback of the bytes written since the last call."""
        pending = self.written - self._written_back
        if pending:
            handle.flush()
            write_back(handle.fileno(), handle.tell() - pending, pending)
            self._written_back = self.written

    def _release(self) -> None:
        """The body was read to its end: the connection may serve another exchange."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        response = self._response
        if response is not None and not response.will_close and not self._aborted:
            self._connections.give_back(self._origin, conn)
        else:
            conn.close()

    def abort(self) -> None:
        """Make a blocked read in the worker thread return now (called from the loop)."""
        self._aborted = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            # the plain socket's shutdown, under TLS too: the TLS object stays with the reader
            with contextlib.suppress(OSError):  # already closed
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)

    def close(self) -> None:
        """Drop the connection unless its body was read to the end and it went back."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
