"""A body's bytes into its staging file: written, hashed and checkpointed as they arrive.

Two receivers, one rule for the file: `stream` reads a body on the event loop (a first
hop's answer, which the source's check may have started to read) and writes and hashes it
in thread hops; `pump` has a storage hop's body received, written and hashed in a worker
thread (`receive.py`) and comes back to the loop only to checkpoint. Either way the
checkpoint follows CHECKPOINT_BYTES and CHECKPOINT_SECONDS, the staging file holds exactly
the bytes hashed, and a full disk raises `DiskSpaceError` with the partial kept.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import http.client
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from agent.errors import DiskSpaceError, TransientError
from agent.transfer.pacing import BandwidthLimiter
from agent.transfer.partial import Partial
from agent.transfer.receive import Exchange, Receiver

# Bytes gathered before one write+hash off the event loop. Small on purpose: whatever was
# received but not yet written when the process is killed is fetched again on resume, so
# this bounds the waste of a crash. Measured against the storage sandbox on loopback
# (256 MiB, 2 CPUs): 64 KiB reads with 256 KiB writes up to 1 MiB/4 MiB blocks all ran at
# 250-480 MiB/s, the differences within run-to-run noise.
WRITE_BLOCK = 256 * 1024
# A body's progress is checkpointed after at least this many bytes and this much time: a
# slow body every 16 MiB, a fast one about once a second. Each checkpoint is a hand-off to
# the loop and back while the body waits: a 2 GiB body from nginx on the busy 2-core VM
# (load 7) had 128 of them, idle 2.0-2.2 s in all; now 9, idle 0.1-0.2 s. Resuming never
# depends on it (a resume continues from the staging file's size); the checkpoint tells
# status how far a job got, and a holder whose lease was taken over learns it there.
CHECKPOINT_BYTES = 16 * 1024 * 1024
CHECKPOINT_SECONDS = 1.0

Checkpoint = Callable[[], Awaitable[None]]  # record the partial's offset and validator now


async def stream(
    partial: Partial,
    response: aiohttp.ClientResponse,
    prefix: bytes,
    bandwidth: BandwidthLimiter,
    checkpoint: Checkpoint,
) -> None:
    """Receive a body on the event loop, writing and hashing it in thread hops."""
    sink = _Sink(partial)
    chunks: list[bytes] = [prefix] if prefix else []
    gathered = len(prefix)
    last_checkpoint, last_time = partial.offset, time.monotonic()
    try:
        try:
            while chunk := await response.content.readany():
                chunks.append(chunk)
                gathered += len(chunk)
                await bandwidth.consume(len(chunk))
                if gathered >= WRITE_BLOCK:
                    gathered = 0
                    await sink.write(chunks)
                    if (
                        partial.offset - last_checkpoint >= CHECKPOINT_BYTES
                        and time.monotonic() - last_time >= CHECKPOINT_SECONDS
                    ):
                        last_checkpoint, last_time = partial.offset, time.monotonic()
                        await checkpoint()
        except (aiohttp.ClientError, TimeoutError) as exc:
            await sink.write(chunks)  # keep what arrived intact
            raise TransientError(
                f"transfer interrupted: {type(exc).__name__}", url=str(response.url)
            ) from exc
        except asyncio.CancelledError:  # shutting down: leave a resumable job behind
            await sink.write(chunks)
            await checkpoint()
            raise
        await sink.write(chunks, last=True)
    finally:
        await sink.close()


async def pump(
    receiver: Receiver, exchange: Exchange, partial: Partial, checkpoint: Checkpoint
) -> None:
    """Have a worker thread receive a body, checkpointing as CHECKPOINT_BYTES says."""
    more = functools.partial(receiver.pump, exchange, partial, CHECKPOINT_BYTES, write_and_hash)
    try:
        while not await more(min_seconds=CHECKPOINT_SECONDS):
            await checkpoint()
    except asyncio.CancelledError:  # shutting down: leave a resumable job behind
        await checkpoint()
        raise
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, OSError) and (full := space_error(exc)) is not None:
            raise full from exc
        raise TransientError(
            f"transfer interrupted: {type(exc).__name__}", url=exchange.url
        ) from exc


class _Sink:
    """The staging file, opened at the first write; each write is one hop off the loop.

    A small body arrives whole before its first write, so opening, writing, hashing and
    closing it cost a single thread hop.
    """

    def __init__(self, partial: Partial) -> None:
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
            if (full := space_error(exc)) is not None:
                raise full from exc
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
    """Append and hash `chunks`; on the last write also close (runs in a thread).

    No fsync: the committer makes a whole batch of finished files durable at once.
    """
    handle = handle or path.open("ab" if append else "wb")
    try:
        write_and_hash(handle, chunks, digest)
    except BaseException:
        handle.close()
        raise
    if last:
        handle.close()
        return None
    return handle


def write_and_hash(handle: BinaryIO, chunks: list[bytes], digest: Any) -> None:
    for chunk in chunks:
        handle.write(chunk)
        digest.update(chunk)


def space_error(exc: OSError) -> DiskSpaceError | None:
    """The error to raise for a write that failed because the disk is full."""
    if exc.errno != errno.ENOSPC:
        return None
    return DiskSpaceError("the disk is full; the partial download is kept for later")
