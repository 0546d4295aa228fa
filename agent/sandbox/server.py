"""Shared plumbing for the sandbox servers: request recording, scripted faults, loopback serving."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as a sandbox saw it."""

    time: float
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    host: str


@dataclass
class RequestLog:
    """Every request a sandbox received, in order, and the most it handled at once."""

    records: list[RecordedRequest] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0

    def clear(self) -> None:
        self.records.clear()
        self.peak_in_flight = self.in_flight

    def matching(
        self, method: str | None = None, path_prefix: str | None = None
    ) -> list[RecordedRequest]:
        return [
            r
            for r in self.records
            if (method is None or r.method == method)
            and (path_prefix is None or r.path.startswith(path_prefix))
        ]

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class ScriptedResponse:
    """A canned answer the fault plan gives instead of the real handler."""

    path_prefix: str
    status: int
    times: int = 1
    headers: dict[str, str] | None = None
    body: bytes | str | dict[str, object] | None = None
    method: str | None = None
    delay: float = 0.0

    def to_response(self) -> web.Response:
        headers = dict(self.headers or {})
        if isinstance(self.body, dict):
            return web.json_response(self.body, status=self.status, headers=headers)
        body = self.body.encode() if isinstance(self.body, str) else self.body
        return web.Response(status=self.status, body=body, headers=headers)


@dataclass
class FaultPlan:
    """Scripted failures, consumed in order, matched by method and path prefix.

    `latency` delays every answer by that many seconds (a slow network or server).
    """

    scripts: list[ScriptedResponse] = field(default_factory=list)
    latency: float = 0.0

    def add(
        self,
        path_prefix: str,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: bytes | str | dict[str, object] | None = None,
        method: str | None = None,
        delay: float = 0.0,
    ) -> None:
        self.scripts.append(
            ScriptedResponse(path_prefix, status, times, headers, body, method, delay)
        )

    def clear(self) -> None:
        self.scripts.clear()

    def take(self, method: str, path: str) -> ScriptedResponse | None:
        for script in self.scripts:
            if script.times <= 0 or not path.startswith(script.path_prefix):
                continue
            if script.method is not None and script.method != method:
                continue
            script.times -= 1
            return script
        return None


def recording_middleware(log: RequestLog) -> Middleware:
    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        log.records.append(
            RecordedRequest(
                time=time.time(),
                method=request.method,
                path=request.path,
                query=request.query_string,
                headers={k.lower(): v for k, v in request.headers.items()},
                host=request.host,
            )
        )
        log.in_flight += 1
        log.peak_in_flight = max(log.peak_in_flight, log.in_flight)
        try:
            return await handler(request)
        finally:
            log.in_flight -= 1

    return record


def fault_middleware(plan: FaultPlan) -> Middleware:
    @web.middleware
    async def faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        if plan.latency:
            await asyncio.sleep(plan.latency)
        script = plan.take(request.method, request.path)
        if script is None:
            return await handler(request)
        if script.delay:
            await asyncio.sleep(script.delay)
        return script.to_response()

    return faults


def json_body(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response with a compact, stable encoding."""
    return web.Response(
        status=status,
        body=json.dumps(data, separators=(",", ":")).encode(),
        content_type="application/json",
        headers=headers,
    )


@asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `app` on loopback and yield its base URL; stop it on exit."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown}:{bound}"
    finally:
        await runner.cleanup()


class Served:
    """Mixin for a sandbox server: `running()` serves its `app` on loopback.

    While it runs, `base_url` holds the bound URL (absolute links in bodies are built from
    it); afterwards it is empty again.
    """

    base_url: str | None

    @property
    def app(self) -> web.Application:
        raise NotImplementedError

    @asynccontextmanager
    async def running(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        async with serve(self.app, host, port) as url:
            self.base_url = url
            try:
                yield url
            finally:
                self.base_url = ""
