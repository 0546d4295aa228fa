"""A forward HTTP proxy on loopback for tests: CONNECT tunnels and absolute-form requests.

Host names ending in `.test` are reached on 127.0.0.1 (so the agent, which never proxies
loopback, can be sent through it); any other host is refused with 502, so nothing leaves
the machine. Every request the proxy receives is recorded, headers included, and with
`credentials` set a request without the right `Proxy-Authorization` is answered 407.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HOP_HEADERS = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    headers: dict[str, str]  # names in lower case


@dataclass
class ForwardProxy:
    credentials: tuple[str, str] | None = None
    seen: list[Seen] = field(default_factory=list)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve on a free loopback port; yields the proxy's URL (without credentials)."""
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.close()
            for writer in self._open:  # what clients kept open (kept-alive tunnels)
                writer.close()
            await asyncio.wait_for(asyncio.gather(*self._handlers, return_exceptions=True), 10)
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._open.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, headers = _parse(head)
            self.seen.append(Seen(method, target, headers))
            if not self._authorized(headers):
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
                writer.write(b"Proxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n")
                return
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, headers, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._open.discard(writer)
            self._handlers.discard(task)
            await _close(writer)

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.credentials is None:
            return True
        token = base64.b64encode(":".join(self.credentials).encode()).decode()
        return headers.get("proxy-authorization") == f"Basic {token}"

    async def _tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, _, port = target.rpartition(":")
        upstream = await _open(host, int(port), writer)
        if upstream is None:
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            await _pipe_both(reader, writer, *upstream)
        finally:
            await _close(upstream[1])

    async def _forward(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        upstream = await _open(parts.hostname, parts.port or 80, writer)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {path} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k not in HOP_HEADERS]
        lines.append("connection: close")
        try:
            up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            length = int(headers.get("content-length", "0"))
            if length:
                up_writer.write(await reader.readexactly(length))
            await _pipe(up_reader, writer)
        finally:
            await _close(up_writer)


def _parse(head: bytes) -> tuple[str, str, dict[str, str]]:
    first, *rest = head.decode("latin-1").split("\r\n")
    method, target, _ = first.split(" ", 2)
    headers = {}
    for line in rest:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def _open(
    host: str, port: int, writer: asyncio.StreamWriter
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection to a `.test` host (on loopback); anything else is refused."""
    if not host.endswith(".test"):
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        return None
    return await asyncio.open_connection("127.0.0.1", port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def one_way(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await _pipe(src, dst)
        with contextlib.suppress(OSError):
            dst.write_eof()

    await asyncio.gather(one_way(reader, up_writer), one_way(up_reader, writer))


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
