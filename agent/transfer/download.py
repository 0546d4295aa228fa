"""Streaming downloads that resume, verify and never leave a wrong file behind.

One `Downloader` serves every source. A fetch streams into a staging file, resuming from
the bytes already there with `Range` guarded by `If-Range`; it follows redirects itself so
that `Authorization` never leaves the first hop; it checks sizes and computes sha256 while
streaming; and it fsyncs before handing the file over for the rename.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import aiohttp

from agent.errors import (
    DiskSpaceError,
    ExpiredUrlError,
    IntegrityError,
    PermanentError,
    RetryLaterError,
    TransientError,
)
from agent.log import get_logger
from agent.models import DownloadTarget, Fetched, JobSpec, RemoteDocument, ResponseHead
from agent.sources.base import Source, check_download_status
from agent.transfer.files import free_bytes, hash_file
from agent.transfer.pacing import BandwidthLimiter, RateLimiter
from agent.transfer.retry import retry_wait

READ_BUFFER = 256 * 1024  # what aiohttp buffers per connection before pausing the socket
# Bytes gathered before one write+hash off the event loop. Small on purpose: whatever was
# received but not yet written when the process is killed is fetched again on resume, so
# this bounds the waste of a crash. Measured against the storage sandbox on loopback
# (256 MiB, 2 CPUs): 64 KiB reads with 256 KiB writes up to 1 MiB/4 MiB blocks all ran at
# 250-480 MiB/s, the differences within run-to-run noise.
WRITE_BLOCK = 256 * 1024
CHECKPOINT_BYTES = 16 * 1024 * 1024
FREE_SPACE_TTL = 0.5  # seconds a free-space reading is trusted
JOURNAL_ABOVE = 1024 * 1024  # smaller bodies are cheaper to fetch again than to journal
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 8
JSON_PEEK = 64 * 1024
CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
DISPOSITION_NAME = re.compile(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)\"?", re.I)

Checkpoint = Callable[[int, int, str | None], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


class _Restart(Exception):
    """The partial cannot be continued: discard it and start from byte zero."""


class _Unauthorized(Exception):
    def __init__(self, rejected: str) -> None:
        self.rejected = rejected


@dataclass
class Endpoint:
    """What a fetch needs from its source: the document, the job's attributes, the budget."""

    source: Source
    doc: RemoteDocument
    attrs: Mapping[str, str]
    limiter: RateLimiter


@dataclass
class _Partial:
    """The staging file and what is known about its bytes."""

    path: Path
    offset: int = 0
    validator: str | None = None
    digest: Any = field(default_factory=hashlib.sha256)
    content_type: str | None = None
    filename: str | None = None

    def reset(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.offset, self.validator, self.digest = 0, None, hashlib.sha256()

    def fetched(self) -> Fetched:
        return Fetched(
            temp_path=str(self.path),
            size=self.offset,
            sha256=self.digest.hexdigest(),
            validator=self.validator,
            content_type=self.content_type,
            filename=self.filename,
        )


class Downloader:
    """Fetches documents into staging files, shared by all sources."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        staging: Path,
        *,
        bandwidth: BandwidthLimiter | None = None,
        min_free_space: int = 0,
        max_attempts: int = 6,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.session = session
        self.staging = staging
        self.bandwidth = bandwidth or BandwidthLimiter(None)
        self.min_free_space = min_free_space
        self.max_attempts = max_attempts
        self.sleep = sleep
        self._free = 0
        self._free_checked = -FREE_SPACE_TTL
        self._staging_ready = False

    async def fetch(self, job: JobSpec, endpoint: Endpoint, checkpoint: Checkpoint) -> Fetched:
        """Download the job's bytes into its staging file; retry transient failures."""
        if not self._staging_ready:
            await asyncio.to_thread(self.staging.mkdir, parents=True, exist_ok=True)
            self._staging_ready = True
        partial = await self._resume_point(job)
        if job.sha256 and partial.offset and partial.digest.hexdigest() == job.sha256:
            return partial.fetched()  # verified before a crash; only the rename was missing
        if partial.offset and not partial.validator:
            partial.reset()  # bytes with nothing to guard a Range by: start over
        log = _LazyLog(job)
        target: DownloadTarget | None = None
        reauthenticated = False
        attempt = 0
        while True:
            attempt += 1
            try:
                target = target or await endpoint.source.download_target(
                    endpoint.doc, endpoint.attrs
                )
                return await self._attempt(job, endpoint, target, partial, checkpoint)
            except _Restart:
                partial.reset()
                log.info("download.restart", reason="partial cannot be continued")
            except _Unauthorized as exc:
                if reauthenticated:
                    url = target.url if target else None
                    raise PermanentError(
                        "the API keeps refusing our credentials", url=url
                    ) from None
                reauthenticated, target = True, None
                await endpoint.source.on_unauthorized(exc.rejected)
                attempt -= 1
            except ExpiredUrlError as exc:
                target = None  # ask the API for a fresh URL and go on from the current offset
                await self._retry_or_raise(attempt, exc, endpoint, log)
            except TransientError as exc:
                if (
                    exc.status is not None
                    and exc.status < 500
                    and exc.status != 429
                    and not isinstance(exc, (IntegrityError, DiskSpaceError))
                ):
                    target = None
                await self._retry_or_raise(attempt, exc, endpoint, log)

    async def _retry_or_raise(
        self, attempt: int, exc: TransientError, endpoint: Endpoint, log: Any
    ) -> None:
        if attempt >= self.max_attempts or isinstance(exc, (DiskSpaceError, RetryLaterError)):
            raise exc
        delay = retry_wait(attempt, exc.retry_after, cap=120.0)
        if exc.status == 429:
            endpoint.limiter.pause(delay)  # slow the whole source, not only this worker
        log.info(
            "download.retry", attempt=attempt, delay=round(delay, 2), error=str(exc), kind=exc.kind
        )
        await self.sleep(delay)

    async def _resume_point(self, job: JobSpec) -> _Partial:
        partial = _Partial(self.staging / job.temp_name)
        if (job.validator or job.sha256) and partial.path.exists():
            digest, size = await asyncio.to_thread(hash_file, partial.path)
            partial.offset, partial.digest, partial.validator = size, digest, job.validator
        # otherwise start from zero: the first write truncates whatever a crash left there
        return partial

    async def _attempt(
        self,
        job: JobSpec,
        endpoint: Endpoint,
        target: DownloadTarget,
        partial: _Partial,
        checkpoint: Checkpoint,
    ) -> Fetched:
        url, headers, first_origin = target.url, dict(target.headers), _origin(target.url)
        if target.paced:
            await endpoint.limiter.acquire()
        for hop in range(MAX_REDIRECTS + 1):
            sent = {**headers, **_range_headers(partial)}
            try:
                async with self.session.get(url, headers=sent, allow_redirects=False) as response:
                    if response.status in REDIRECTS and "Location" in response.headers:
                        url = urljoin(url, response.headers["Location"])
                        headers = _redirect_headers(target.headers, first_origin, url)
                        continue
                    prefix = await self._check_status(endpoint, target, response, hop)
                    return await self._receive(
                        job, endpoint.doc, partial, response, checkpoint, prefix=prefix
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransientError(f"connection failed: {type(exc).__name__}", url=url) from exc
        raise TransientError("too many redirects", url=url)

    async def _receive(
        self,
        job: JobSpec,
        doc: RemoteDocument,
        partial: _Partial,
        response: aiohttp.ClientResponse,
        checkpoint: Checkpoint,
        *,
        prefix: bytes,
    ) -> Fetched:
        url = str(response.url)
        total = self._accept_range(partial, response)
        expected = _expected_size(doc, job, total)
        await self._check_space(expected, partial.offset)
        validator = _validator(response)
        if partial.offset and partial.validator and validator and validator != partial.validator:
            raise _Restart  # the resource changed under us
        partial.validator = validator or partial.validator
        partial.content_type = response.headers.get("Content-Type")
        partial.filename = _disposition_name(response.headers.get("Content-Disposition"))
        if partial.offset or expected is None or expected > JOURNAL_ABOVE:
            await checkpoint(job.job_id, partial.offset, partial.validator)  # what a resume needs
        await self._stream(job, response, partial, checkpoint, prefix)
        return await self._finish(partial, expected, url)

    async def _check_status(
        self, endpoint: Endpoint, target: DownloadTarget, response: aiohttp.ClientResponse, hop: int
    ) -> bytes:
        """Raise for a response that is not the document's bytes; returns bytes already read."""
        status, url = response.status, str(response.url)
        if status == 416:
            raise _Restart
        if hop > 0 and status in (400, 403):
            raise ExpiredUrlError("the storage host refused the signed URL", url=url, status=status)
        head = ResponseHead(status, url, response.headers)
        if hop == 0 and _rejected_credentials(status, target, endpoint.source):
            raise _Unauthorized(target.headers["Authorization"])
        if hop == 0 and target.json_errors and _is_json(response):
            head = ResponseHead(
                status, url, response.headers, await response.content.read(JSON_PEEK)
            )
            endpoint.source.check_response(head)
            return head.body or b""  # not an error envelope: a JSON document
        if hop == 0:
            endpoint.source.check_response(head)
        else:
            check_download_status(head)
        return b""

    def _accept_range(self, partial: _Partial, response: aiohttp.ClientResponse) -> int | None:
        """Reconcile the response with the partial; returns the full size when known."""
        if response.status == 206:
            match = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != partial.offset:
                raise _Restart
            return None if match.group(3) == "*" else int(match.group(3))
        if partial.offset:
            partial.reset()  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None

    async def _check_space(self, expected: int | None, offset: int) -> None:
        if not self.min_free_space:
            return
        need = (expected or 0) - offset + self.min_free_space
        free = await self._free_space()
        if free < need:
            raise DiskSpaceError(
                f"not enough free space: {free} bytes free, {need} needed (min_free_space included)"
            )

    async def _free_space(self) -> int:
        """Free bytes in the staging folder, asked of the OS at most every FREE_SPACE_TTL."""
        now = time.monotonic()
        if now - self._free_checked > FREE_SPACE_TTL:
            self._free = await asyncio.to_thread(free_bytes, self.staging)
            self._free_checked = now
        return self._free

    async def _stream(
        self,
        job: JobSpec,
        response: aiohttp.ClientResponse,
        partial: _Partial,
        checkpoint: Checkpoint,
        prefix: bytes,
    ) -> None:
        sink = _Sink(partial)
        chunks: list[bytes] = [prefix] if prefix else []
        gathered = len(prefix)
        last_checkpoint = partial.offset
        try:
            try:
                while chunk := await response.content.readany():
                    chunks.append(chunk)
                    gathered += len(chunk)
                    await self.bandwidth.consume(len(chunk))
                    if gathered >= WRITE_BLOCK:
                        gathered = 0
                        await sink.write(chunks)
                        if partial.offset - last_checkpoint >= CHECKPOINT_BYTES:
                            last_checkpoint = partial.offset
                            await checkpoint(job.job_id, partial.offset, partial.validator)
            except (aiohttp.ClientError, TimeoutError) as exc:
                await sink.write(chunks)  # keep what arrived intact
                raise TransientError(
                    f"transfer interrupted: {type(exc).__name__}", url=str(response.url)
                ) from exc
            except asyncio.CancelledError:  # shutting down: leave a resumable job behind
                await sink.write(chunks)
                await checkpoint(job.job_id, partial.offset, partial.validator)
                raise
            await sink.write(chunks, last=True)
        finally:
            await sink.close()

    async def _finish(self, partial: _Partial, expected: int | None, url: str) -> Fetched:
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


class _Sink:
    """The staging file, opened at the first write; each write is one hop off the loop.

    A small body arrives whole before its first write, so opening, writing, hashing,
    fsyncing and closing it cost a single thread hop.
    """

    def __init__(self, partial: _Partial) -> None:
        self.partial = partial
        self.handle: BinaryIO | None = None

    async def write(self, chunks: list[bytes], *, last: bool = False) -> None:
        if not chunks and not last:
            return
        batch = chunks[:]
        chunks.clear()
        try:
            self.handle = await asyncio.to_thread(
                functools.partial(
                    _write_chunks,
                    self.partial.path,
                    self.handle,
                    batch,
                    self.partial.digest,
                    last=last,
                    append=self.partial.offset > 0,
                )
            )
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskSpaceError(
                    "the disk is full; the partial download is kept for later"
                ) from exc
            raise
        self.partial.offset += sum(len(c) for c in batch)

    async def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            await asyncio.to_thread(handle.close)


def _write_chunks(
    path: Path,
    handle: BinaryIO | None,
    chunks: list[bytes],
    digest: Any,
    *,
    last: bool,
    append: bool,
) -> BinaryIO | None:
    """Append and hash `chunks`; on the last write also fsync and close (runs in a thread)."""
    handle = handle or path.open("ab" if append else "wb")
    try:
        _write_and_hash(handle, chunks, digest)
        if last:
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        handle.close()
        raise
    if last:
        handle.close()
        return None
    return handle


def _write_and_hash(handle: BinaryIO, chunks: list[bytes], digest: Any) -> None:
    for chunk in chunks:
        handle.write(chunk)
        digest.update(chunk)


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


def _range_headers(partial: _Partial) -> dict[str, str]:
    if partial.offset <= 0:
        return {}
    headers = {"Range": f"bytes={partial.offset}-"}
    if partial.validator:
        headers["If-Range"] = partial.validator
    return headers


def _validator(response: aiohttp.ClientResponse) -> str | None:
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _expected_size(doc: RemoteDocument, job: JobSpec, total: int | None) -> int | None:
    promised = doc.size if doc.size is not None else job.expected_size
    if promised is not None and total is not None and promised != total:
        raise IntegrityError(f"the listing promised {promised} bytes, the server sends {total}")
    return total if total is not None else promised


def _is_json(response: aiohttp.ClientResponse) -> bool:
    return "json" in response.headers.get("Content-Type", "").lower()


def _rejected_credentials(status: int, target: DownloadTarget, source: Source) -> bool:
    if "Authorization" not in target.headers:
        return False
    return status == 401 or (status == 403 and 403 in _retry_statuses(source))


def _retry_statuses(source: Source) -> frozenset[int]:
    auth = getattr(source, "auth", None)
    statuses = getattr(auth, "retry_statuses", frozenset({401}))
    return frozenset(statuses)


def _disposition_name(value: str | None) -> str | None:
    if not value:
        return None
    match = DISPOSITION_NAME.search(value)
    return match.group(1).strip() if match else None
