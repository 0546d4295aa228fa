"""The paced, retrying HTTP client every source uses for its API calls.

One `ApiClient` per source wraps one `aiohttp.ClientSession`. It spends the source's shared
request budget, judges each answer (by default by its status; a source may pass its own
check), and follows `retry.decide` exactly as a download does: retry with back-off (a 429
pauses the whole budget first), renew refused credentials, or give up. It translates
aiohttp's exceptions into ours.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from agent.config.proxies import Proxies
from agent.errors import TransientError, safe_url
from agent.log import get_logger
from agent.transfer import proxied
from agent.transfer.contract import (
    TRANSIENT_STATUSES,
    Credential,
    Outcome,
    Verdict,
    token_verdict,
)
from agent.transfer.pacing import Pacer, wait_out
from agent.transfer.retry import Action, Decision, RetryPolicy, decide

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
    """Hands out credentials per request and renews them when the server refuses them."""

    renew_statuses: frozenset[int]

    async def lease(self) -> Credential: ...

    async def renew(self, refused: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A fully read API response; `data` is what the request's check read from it."""

    status: int
    url: str
    headers: CIMultiDictProxy[str]
    body: bytes
    data: Any = None

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise TransientError(
                "the API sent a body that is not JSON", url=self.url, status=self.status
            ) from exc

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


Check = Callable[[ApiResponse], Outcome]


def status_check(passthrough: frozenset[int] = frozenset()) -> Check:
    """The default check: a transient status (unless passed through) is worth a retry."""

    def check(response: ApiResponse) -> Outcome:
        status = response.status
        if status in TRANSIENT_STATUSES and status not in passthrough:
            error = TransientError(
                "the API answered with a transient error", url=response.url, status=status
            )
            return Outcome.of(error)
        return Outcome.content()

    return check


@dataclass(frozen=True, slots=True)
class _Request:
    """One API request as the client repeats it."""

    method: str
    url: str
    headers: Mapping[str, str]
    options: Mapping[str, Any]
    auth: Authenticator | None
    check: Check


class ApiClient:
    """Paced, retrying requests to one source's API."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        limiter: Pacer,
        *,
        source: str,
        proxies: Proxies | None = None,
        max_attempts: int = 5,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.session = session
        self.limiter = limiter
        self.source = source
        self.proxies = proxies or Proxies()
        self.policy = RetryPolicy(max_attempts=max_attempts, cap=300.0)
        self.sleep = sleep
        self.clock = clock
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
        check: Check | None = None,
        max_attempts: int | None = None,
        allow_redirects: bool = False,
    ) -> ApiResponse:
        """Send a request until its check calls the answer content, or `decide` gives up.

        With `auth`, a status in `auth.renew_statuses` renews the credentials. The default
        check retries transient statuses except those in `passthrough` (for a caller that
        reads them itself) and returns any other answer; a custom `check` judges every
        answer, and the `value` of its content outcome becomes the response's `data`.
        `max_attempts=1` sends once (a grant that a lost answer may have spent already).
        """
        options = {
            "params": params,
            "json": json_body,
            "data": data,
            "allow_redirects": allow_redirects,
        }
        judge = check or status_check(passthrough)
        request = _Request(method, url, headers or {}, options, auth, judge)
        policy = self.policy
        if max_attempts is not None:
            policy = replace(policy, max_attempts=max_attempts)
        attempt = renewals = 0
        while True:
            response, outcome, refused = await self._attempt(request)
            if response is not None and outcome.verdict is Verdict.CONTENT:
                return replace(response, data=outcome.value)
            if outcome.verdict is not Verdict.RENEW:
                attempt += 1
            retry_after = response.header("Retry-After") if response is not None else None
            now = datetime.fromtimestamp(self.clock(), UTC)
            decision = decide(attempt, outcome, retry_after, now, renewals=renewals, policy=policy)
            await self._follow(decision, outcome, request, refused, attempt)
            if decision.action is Action.RENEW:
                renewals += 1

    async def _follow(
        self,
        decision: Decision,
        outcome: Outcome,
        request: _Request,
        refused: str,
        attempt: int,
    ) -> None:
        """Carry out a decision that is not content: give up, renew, or wait to retry."""
        error = outcome.failure()
        if decision.action is Action.GIVE_UP or (
            decision.action is Action.RENEW and request.auth is None
        ):
            raise error
        if decision.action is Action.RENEW:
            assert request.auth is not None  # for mypy: checked above
            if decision.delay:
                await self.sleep(decision.delay)
            await request.auth.renew(refused)
            return
        if decision.throttled:
            self.log.warning("api.throttled", url=safe_url(request.url), delay=decision.delay)
        self.log.info(
            "api.retry", attempt=attempt, delay=round(decision.delay, 2), error=str(error)
        )
        await wait_out(decision, self.limiter, self.sleep)

    async def _attempt(self, request: _Request) -> tuple[ApiResponse | None, Outcome, str]:
        """Send once and judge the answer; returns it, its outcome and the header sent."""
        credential = await request.auth.lease() if request.auth is not None else None
        sent = CIMultiDict(request.headers)
        if credential is not None:
            sent["Authorization"] = credential.header
            await credential.ready()
        header = sent.get("Authorization", "")
        try:
            response = await self._send(request.method, request.url, sent, request.options)
            return response, self._judge(request, response, credential), header
        except TransientError as exc:
            return None, Outcome.of(exc), header
        finally:
            if credential is not None:
                credential.settle(None)  # no answer, no word; ignored once _judge settled

    def _judge(
        self, request: _Request, response: ApiResponse, credential: Credential | None
    ) -> Outcome:
        if credential is not None and request.auth is not None:
            if response.status in request.auth.renew_statuses:
                outcome = Outcome.renew(request.url, response.status)
            else:
                outcome = request.check(response)
            credential.settle(token_verdict(outcome, response.status))
            return outcome
        return request.check(response)

    async def _send(
        self, method: str, url: str, headers: CIMultiDict[str], options: Mapping[str, Any]
    ) -> ApiResponse:
        await self.limiter.acquire()
        proxy = proxied.aiohttp_options(self.proxies, url)
        try:
            async with self.session.request(
                method, url, headers=headers, **options, **proxy
            ) as response:
                body = await response.read()
                return ApiResponse(response.status, str(response.url), response.headers, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"request failed: {type(exc).__name__}", url=url) from exc
