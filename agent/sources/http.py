"""The paced, retrying HTTP client every source uses for its API calls.

One `ApiClient` per source wraps one `aiohttp.ClientSession`. It spends the source's shared
request budget, retries transient failures with backoff (honouring Retry-After), refreshes
credentials once on a rejected token, and translates aiohttp's exceptions into ours.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from agent.errors import TransientError, safe_url
from agent.log import get_logger
from agent.transfer.pacing import RateLimiter
from agent.transfer.retry import TRANSIENT_STATUSES, parse_retry_after, retry_wait

Sleep = Callable[[float], Awaitable[None]]
USER_AGENT = "sync-agent/0.1 (+https://github.com/sync-agent)"


def make_timeout(total: float | None = None) -> aiohttp.ClientTimeout:
    """Every timeout set: connect, first byte and between reads; total only for API calls."""
    return aiohttp.ClientTimeout(total=total, connect=30, sock_connect=30, sock_read=120)


@asynccontextmanager
async def open_session(
    *,
    limit: int = 16,
    limit_per_host: int = 8,
    total_timeout: float | None = 300,
    read_bufsize: int = 2**16,
) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session with bounded connections and every timeout set."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit_per_host, ttl_dns_cache=300)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=make_timeout(total_timeout),
        headers={"User-Agent": USER_AGENT},
        auto_decompress=False,
        read_bufsize=read_bufsize,
    ) as session:
        yield session


class Authenticator(Protocol):
    """Supplies the Authorization header and renews it when the server rejects it."""

    retry_statuses: frozenset[int]

    async def authorization(self) -> str: ...

    async def refresh(self, rejected: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A fully read API response."""

    status: int
    url: str
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise TransientError(
                "the API sent a body that is not JSON", url=self.url, status=self.status
            ) from exc

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class ApiClient:
    """Paced, retrying requests to one source's API."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        limiter: RateLimiter,
        *,
        source: str,
        max_attempts: int = 5,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.session = session
        self.limiter = limiter
        self.source = source
        self.max_attempts = max_attempts
        self.sleep = sleep
        self.log = get_logger(source=source)

    async def request(
        self,
        method: str,
        url: str,
        *,
        auth: Authenticator | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: Mapping[str, str] | None = None,
        passthrough: frozenset[int] = frozenset(),
        allow_redirects: bool = False,
    ) -> ApiResponse:
        """Send a request, retrying transient failures; any other status is returned.

        Statuses in `passthrough` are returned instead of being retried (a caller that
        reads an error envelope from the body, say).
        """
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            sent = CIMultiDict(headers or {})
            if auth is not None:
                sent["Authorization"] = await auth.authorization()
            try:
                response = await self._send(
                    method,
                    url,
                    headers=sent,
                    params=params,
                    json=json_body,
                    data=data,
                    allow_redirects=allow_redirects,
                )
            except TransientError as exc:
                await self._wait_or_raise(attempt, exc)
                continue
            if auth is not None and response.status in auth.retry_statuses and not refreshed:
                refreshed = True
                await auth.refresh(sent["Authorization"])
                continue
            if response.status in TRANSIENT_STATUSES and response.status not in passthrough:
                error = TransientError(
                    "the API answered with a transient error",
                    url=url,
                    status=response.status,
                    retry_after=parse_retry_after(response.header("Retry-After")),
                )
                self._note_throttle(error)
                await self._wait_or_raise(attempt, error)
                continue
            return response

    def _note_throttle(self, exc: TransientError) -> None:
        if exc.status == 429:
            self.limiter.pause(retry_wait(1, exc.retry_after))
            self.log.warning("api.throttled", url=safe_url(exc.url), retry_after=exc.retry_after)

    async def _wait_or_raise(self, attempt: int, exc: TransientError) -> None:
        if attempt >= self.max_attempts:
            raise exc
        delay = 0.0 if exc.status == 429 else retry_wait(attempt, exc.retry_after)
        self.log.info("api.retry", attempt=attempt, delay=round(delay, 2), error=str(exc))
        await self.sleep(delay)

    async def _send(self, method: str, url: str, **options: Any) -> ApiResponse:
        await self.limiter.acquire()
        try:
            async with self.session.request(method, url, **options) as response:
                body = await response.read()
                return ApiResponse(response.status, str(response.url), response.headers, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"request failed: {type(exc).__name__}", url=url) from exc
