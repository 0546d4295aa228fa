"""Streaming downloads that resume, verify and never leave a wrong file behind.

One `Downloader` serves every source through the download contract (`contract.py`). A fetch
streams into a staging file, resuming from the bytes already there with `Range` guarded by
`If-Range`; it follows redirects itself so that `Authorization` never leaves the first hop;
it checks sizes and computes the content digest (`digests.py`) while streaming, then hands
the file over to the committer, which makes a batch of them durable before renaming them
into place. What to do after an answer that is not the content is `retry.decide`'s call,
the same rule API calls follow.

The first hop (the source's API, whose answer the source's own check may read) runs on the
event loop; every hop after a redirect (the storage host) is sent and received in a worker
thread (`receive.py`), which keeps the loop free for the API requests around it. How a
body's bytes reach the staging file, hashed and checkpointed, is `bodies.py`'s.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from agent.config.proxies import Proxies
from agent.errors import (
    DiskSpaceError,
    DocumentError,
    ExpiredUrlError,
    IntegrityError,
    TransientError,
)
from agent.log import get_logger
from agent.models import Fetched, JobSpec, RemoteDocument
from agent.transfer import bodies, proxied
from agent.transfer.contract import (
    Answer,
    DownloadContract,
    DownloadTarget,
    Outcome,
    ResponseHead,
    Verdict,
    status_error,
    token_verdict,
)
from agent.transfer.digests import DEFAULT, Algorithm
from agent.transfer.durable import Durability
from agent.transfer.files import Volume, space_shortfall, volume
from agent.transfer.pacing import BandwidthLimiter, Pacer, wait_out
from agent.transfer.partial import Partial, Restart, expected_size
from agent.transfer.receive import Receiver
from agent.transfer.retry import Action, RetryPolicy, decide

READ_BUFFER = 256 * 1024  # what aiohttp buffers per connection before pausing the socket
FREE_SPACE_TTL = 0.5  # seconds a free-space reading is trusted
JOURNAL_ABOVE = 1024 * 1024  # smaller bodies are cheaper to fetch again than to journal
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 8

Checkpoint = Callable[[int, int, str | None], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]
Receive = Callable[[], Awaitable[None]]  # the body into the staging file


@dataclass
class Endpoint:
    """What a fetch needs from its source: the contract, the document, the job's attributes
    and the source's request budget; `refuse_size`, when given, is asked about the size an
    answer announces before a byte of it is written (the error to give up with, or None)."""

    source: DownloadContract
    doc: RemoteDocument
    attrs: Mapping[str, str]
    limiter: Pacer
    refuse_size: Callable[[int], DocumentError | None] | None = None


@dataclass(frozen=True, slots=True)
class _Answered:
    """A first hop that did not bring the content: what it means, and its Retry-After."""

    outcome: Outcome
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class _Redirect:
    """A hop answered with a redirect to `location` (relative to the hop's URL)."""

    location: str


@dataclass
class _Fetch:
    """One job's fetch in progress: what it fetches, into which file, and how it went."""

    job: JobSpec
    endpoint: Endpoint
    partial: Partial
    checkpoint: Checkpoint
    log: _LazyLog
    target: DownloadTarget | None = None
    attempt: int = 0
    renewals: int = 0

    async def progress(self) -> None:
        """Checkpoint how far the staging file got, for a resume and for status."""
        await self.checkpoint(self.job.job_id, self.partial.offset, self.partial.validator)


class Downloader:
    """Fetches documents into staging files, shared by all sources.

    It owns the worker threads and kept-alive connections of the storage hops and the pool
    that makes finished files durable (`durability`): use it as an async context manager.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        staging: Path,
        *,
        bandwidth: BandwidthLimiter | None = None,
        min_free_space: int | None = 0,  # None: the default reserve (see files.reserve)
        max_attempts: int = 6,
        threads: int = 8,
        algorithm: Algorithm = DEFAULT,
        proxies: Proxies | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.session = session
        self.proxies = proxies or Proxies()
        self.staging = staging
        self.bandwidth = bandwidth or BandwidthLimiter(None)
        self.min_free_space = min_free_space
        self.policy = RetryPolicy(max_attempts=max_attempts, cap=120.0)
        self.algorithm = algorithm
        self.sleep = sleep
        self.clock = clock
        self.durability = Durability()
        self._receiver = Receiver(threads, self.bandwidth, self.proxies)
        self._free = Volume(0, 0)
        self._free_checked = -FREE_SPACE_TTL
        self._staging_ready = False

    async def __aenter__(self) -> Downloader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the worker threads and close idle connections (every fetch has ended)."""
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._receiver.close()
        self.durability.close()

    async def fetch(self, job: JobSpec, endpoint: Endpoint, checkpoint: Checkpoint) -> Fetched:
        """Download the job's bytes into its staging file; retry what `decide` says to."""
        if not self._staging_ready:
            await asyncio.to_thread(self.staging.mkdir, parents=True, exist_ok=True)
            self._staging_ready = True
        partial = await Partial.resume(self.staging, job, self.algorithm)
        if job.digest and partial.offset and partial.value() == job.digest:
            return partial.fetched()  # verified before a crash; only the rename was missing
        if partial.offset and not partial.validator:
            partial.reset()  # bytes with nothing to guard a Range by: start over
        run = _Fetch(job, endpoint, partial, checkpoint, _LazyLog(job))
        while True:
            result = await self._try(run)
            if isinstance(result, Fetched):
                return result
            if result is not None:
                await self._follow(run, result)

    async def _try(self, run: _Fetch) -> Fetched | _Answered | None:
        """One attempt (None: the partial was discarded, try again at once)."""
        endpoint = run.endpoint
        try:
            run.target = run.target or await endpoint.source.download_target(
                endpoint.doc, endpoint.attrs
            )
            return await self._attempt(run, run.target)
        except Restart:
            run.partial.reset()
            run.log.info("download.restart", reason="partial cannot be continued")
            run.attempt += 1
            return None
        except DocumentError as exc:
            return _Answered(Outcome.of(exc))

    async def _follow(self, run: _Fetch, answered: _Answered) -> None:
        """Do what `decide` says after an attempt that brought no content, or raise."""
        outcome = answered.outcome
        if outcome.verdict is not Verdict.RENEW:
            run.attempt += 1
        now = datetime.fromtimestamp(self.clock(), UTC)
        decision = decide(
            run.attempt,
            outcome,
            answered.retry_after,
            now,
            renewals=run.renewals,
            policy=self.policy,
        )
        error = outcome.failure()
        if decision.action is Action.GIVE_UP:
            raise error
        used = run.target
        if decision.action is not Action.RETRY:
            run.target = None  # renewed credentials or an expired URL: ask for a new target
        if decision.action is Action.RENEW:
            run.renewals += 1
            if decision.delay:
                await self.sleep(decision.delay)
            refused = used.credential if used is not None else None
            await run.endpoint.source.renew(refused.header if refused is not None else "")
            return
        delay = round(decision.delay, 2)
        run.log.info(
            "download.retry", attempt=run.attempt, delay=delay, error=str(error), kind=error.kind
        )
        await wait_out(decision, run.endpoint.limiter, self.sleep)

    async def _attempt(self, run: _Fetch, target: DownloadTarget) -> Fetched | _Answered:
        credential = target.credential
        if credential is not None:
            await credential.ready()
        try:
            if target.paced:
                await run.endpoint.limiter.acquire()
            return await self._hops(run, target)
        finally:
            if credential is not None:
                credential.settle(None)  # no answer from the first hop: no word on the token

    async def _hops(self, run: _Fetch, target: DownloadTarget) -> Fetched | _Answered:
        url, headers, first_origin = target.url, dict(target.headers), _origin(target.url)
        for hop in range(MAX_REDIRECTS + 1):
            sent = {**headers, **run.partial.range_headers()}
            if hop == 0:
                result = await self._first_hop(run, target, url, sent)
            else:
                result = await self._storage_hop(run, url, sent)
            if not isinstance(result, _Redirect):
                return result
            url = urljoin(url, result.location)
            headers = _redirect_headers(target.headers, first_origin, url)
        raise TransientError("too many redirects", url=url)

    async def _first_hop(
        self, run: _Fetch, target: DownloadTarget, url: str, sent: dict[str, str]
    ) -> Fetched | _Answered | _Redirect:
        """The request to the target itself, on the event loop's session: the source's
        check may read the start of the answer, and a body that follows is streamed."""
        try:
            proxy = proxied.aiohttp_options(self.proxies, url)
            async with self.session.get(
                url, headers=sent, allow_redirects=False, **proxy
            ) as response:
                if response.status in REDIRECTS and "Location" in response.headers:
                    if target.credential is not None:
                        target.credential.settle(True)
                    return _Redirect(response.headers["Location"])
                outcome, prefix = await self._judge(run.endpoint.source, target, response)
                if outcome.verdict is not Verdict.CONTENT:
                    return _Answered(outcome, response.headers.get("Retry-After"))
                head = ResponseHead(response.status, str(response.url), response.headers)
                receive = functools.partial(
                    bodies.stream, run.partial, response, prefix, self.bandwidth, run.progress
                )
                return await self._receive(run, head, receive)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"connection failed: {type(exc).__name__}", url=url) from exc

    async def _storage_hop(
        self, run: _Fetch, url: str, sent: dict[str, str]
    ) -> Fetched | _Answered | _Redirect:
        """A hop after a redirect, sent and received in a worker thread (`receive.py`)."""
        exchange = self._receiver.exchange(url, {**self.session.headers, **sent})
        try:
            try:
                status, headers = await self._receiver.open(exchange)
            except (OSError, http.client.HTTPException) as exc:
                raise TransientError(f"connection failed: {type(exc).__name__}", url=url) from exc
            head = ResponseHead(status, url, headers)
            if head.status in REDIRECTS and "Location" in headers:
                return _Redirect(headers["Location"])
            outcome = _storage_outcome(head)
            if outcome.verdict is not Verdict.CONTENT:
                return _Answered(outcome, headers.get("Retry-After"))
            receive = functools.partial(
                bodies.pump, self._receiver, exchange, run.partial, run.progress
            )
            return await self._receive(run, head, receive)
        finally:
            exchange.close()

    async def _judge(
        self,
        source: DownloadContract,
        target: DownloadTarget,
        response: aiohttp.ClientResponse,
    ) -> tuple[Outcome, bytes]:
        """What a first-hop answer that is not a redirect means, and the body bytes read."""
        status, url = response.status, str(response.url)
        head = ResponseHead(status, url, response.headers)
        if status == 416:
            raise Restart
        credential = target.credential
        if credential is not None and status in source.renew_statuses:
            outcome, prefix = Outcome.renew(url, status), b""
        else:
            answer = Answer(head, response.content.read)
            outcome, prefix = await source.check_download(answer), answer.prefix
        if credential is not None:
            credential.settle(token_verdict(outcome, status))
        return outcome, prefix

    async def _receive(self, run: _Fetch, head: ResponseHead, receive: Receive) -> Fetched:
        job, partial = run.job, run.partial
        total = partial.accept(head)
        expected = expected_size(run.endpoint.doc, job, total)
        refuse = run.endpoint.refuse_size
        if expected is not None and refuse is not None and (refused := refuse(expected)):
            raise refused
        await self._check_space(expected, partial.offset)
        partial.take_validator(head)
        if partial.offset or expected is None or expected > JOURNAL_ABOVE:
            await run.progress()  # for a resume
        await receive()
        return await self._finish(partial, expected, head.url)

    async def _check_space(self, expected: int | None, offset: int) -> None:
        if self.min_free_space == 0:
            return
        shortfall = space_shortfall(
            await self._volume(), (expected or 0) - offset, self.min_free_space
        )
        if shortfall is not None:
            raise DiskSpaceError(shortfall)

    async def _volume(self) -> Volume:
        """The staging folder's volume, asked of the OS at most every FREE_SPACE_TTL."""
        now = time.monotonic()
        if now - self._free_checked > FREE_SPACE_TTL:
            self._free = await asyncio.to_thread(volume, self.staging)
            self._free_checked = now
        return self._free

    async def _finish(self, partial: Partial, expected: int | None, url: str) -> Fetched:
        if expected is not None and partial.offset < expected:
            raise TransientError(
                f"body ended early at {partial.offset} of {expected} bytes", url=url
            )
        if expected is not None and partial.offset > expected:
            partial.reset()
            raise IntegrityError(f"received more bytes than the {expected} promised", url=url)
        return partial.fetched()


class _LazyLog:
    """The job's bound logger, made only when there is something to say (rarely)."""

    def __init__(self, job: JobSpec) -> None:
        self.job = job

    def info(self, event: str, **fields: Any) -> None:
        get_logger(source=self.job.source, remote_id=self.job.remote_id).info(event, **fields)


def _storage_outcome(head: ResponseHead) -> Outcome:
    """What a storage host's answer that is not a redirect means (a refused signed URL
    has expired); the source's API is not involved any more."""
    if head.status == 416:
        raise Restart
    if head.status in (400, 403):
        refused = ExpiredUrlError("the storage host refused the signed URL", url=head.url)
        return Outcome.of(refused)
    error = status_error(head)
    return Outcome.of(error) if error else Outcome.content()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _redirect_headers(
    first: Mapping[str, str], first_origin: tuple[str, str], url: str
) -> dict[str, str]:
    """Headers for a redirect hop: never Authorization; nothing at all off the first origin."""
    if _origin(url) != first_origin:
        return {}
    return {k: v for k, v in first.items() if k.lower() != "authorization"}
