"""Storage bodies received in worker threads: batched durability, cancellation, pacing,
kept-alive connections, credentials, and the recorded digest's algorithm."""

from __future__ import annotations

import asyncio
import gc
import http.server
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from transfer_kit import SOURCE, World, at_dir_fd, payload

from agent.models import PassStats
from agent.state.documents import Documents
from agent.state.store import Store
from agent.transfer.durable import Durability
from agent.transfer.pacing import BandwidthLimiter
from agent.transfer.receive import Connections, Exchange, Receiver, connect_unless

MIB = 1024 * 1024


def _ok(outcome: PassStats | BaseException) -> PassStats:
    assert isinstance(outcome, PassStats), outcome
    assert outcome.failed == 0, outcome.errors
    return outcome


async def test_a_batch_is_fsynced_whole_before_any_rename_and_committed_after(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"batch-{n}.bin" for n in range(3)]
    for n, name in enumerate(names):
        world.add(name, payload(50_000 + n, seed=60 + n))
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace, real_commit = os.fsync, os.replace, Documents.commit_mirrored

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        moved = (at_dir_fd(kwargs.get("src_dir_fd"), src), at_dir_fd(kwargs.get("dst_dir_fd"), dst))
        events.append(("rename", *moved))
        real_replace(src, dst, **kwargs)

    async def commit(self: Documents, source: str, items: Any, **journal: Any) -> Any:
        events.append(("commit", *sorted(m.rel_path for m in items)))
        return await real_commit(self, source, items, **journal)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Documents, "commit_mirrored", commit)

    _ok(await world.sync())

    batches = [(i, e[1:]) for i, e in enumerate(events) if e[0] == "commit" and len(e) > 1]
    assert sorted(rel for _, batch in batches for rel in batch) == _rel(names)  # each once
    for committed_at, batch in batches:
        dests = {str(world.mirror / rel) for rel in batch}
        renamed = {i: e[1] for i, e in enumerate(events) if e[0] == "rename" and e[2] in dests}
        temps = set(renamed.values())
        synced = [i for i, e in enumerate(events) if e[0] == "fsync" and e[1] in temps]
        assert all(Path(temp).parent == world.staging for temp in temps)
        assert len(synced) == len(renamed) == len(batch)
        assert max(synced) < min(renamed)  # every file of the batch on disk before any rename
        assert max(renamed) < committed_at  # and in place before its row says so
    await world.assert_exact()


def _rel(names: list[str]) -> list[str]:
    return sorted(f"{SOURCE}/{name}" for name in names)


async def test_a_cancelled_transfer_stops_at_once_and_leaves_a_resumable_job(
    world: World,
) -> None:
    data = payload(6 * MIB, seed=70)
    world.add("stopped.bin", data)
    world.storage.faults.bytes_per_second = 2 * MIB  # three seconds for the whole body

    task = asyncio.create_task(world.sync())
    deadline = time.monotonic() + 20
    while not _partial_size(world) >= MIB:
        assert time.monotonic() < deadline, "the partial never grew"
        await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)  # not 120 s

    kept = _partial_size(world)
    async with Store.open(world.config().agent.state_url, world.state_dir) as store:
        (job,) = await store.jobs.views()
    assert MIB <= kept < len(data)
    assert job.bytes_done == kept  # checkpointed as it stopped

    world.storage.faults.bytes_per_second = None
    _ok(await world.sync())
    await world.assert_exact()
    resumed = world.storage.log.matching("GET", "/b/")[-1].headers.get("range", "")
    assert resumed == f"bytes={kept}-"


def _partial_size(world: World) -> int:
    parts = list(world.staging.glob("*.part")) if world.staging.is_dir() else []
    return parts[0].stat().st_size if parts else 0


async def test_the_bandwidth_limit_paces_a_storage_body(world: World) -> None:
    rate = 512 * 1024
    data = payload(2 * rate, seed=71)
    world.add("paced.bin", data)
    world.agent_options["bandwidth_limit"] = rate
    started = time.monotonic()

    _ok(await world.sync())

    # the bucket starts with one second's allowance: the second second must be waited for
    assert time.monotonic() - started >= (len(data) - rate) / rate
    await world.assert_exact()


async def test_storage_requests_carry_no_authorization(world: World) -> None:
    for n in range(3):
        world.add(f"plain-{n}.pdf", payload(3000, seed=72 + n))

    _ok(await world.sync())

    storage = world.storage.log.matching("GET", "/b/")
    assert len(storage) == 3
    assert all("authorization" not in {k.lower() for k in r.headers} for r in storage)


async def test_sha256_on_request_stays_checkable_after_switching_to_blake3(
    world: World,
) -> None:
    old = payload(4000, seed=73)
    doc_id = world.add("kept.pdf", old)
    world.agent_options["hash_algorithm"] = "sha256"
    _ok(await world.sync())
    assert await world.row_digest(doc_id) == world.digest(old)
    assert (await world.row_digest(doc_id) or "").startswith("sha256:")
    path = await world.mirrored_path(doc_id)
    assert path is not None
    os.utime(path, ns=(1, 1))  # same bytes, another mtime: the check must hash the file

    world.agent_options["hash_algorithm"] = "blake3"
    new = payload(4000, seed=74)
    world.sandbox.update_document(doc_id, new)
    _ok(await world.sync())

    assert list(path.parent.glob("*local copy*")) == []  # recognised as the agent's own file
    assert await world.row_digest(doc_id) == world.digest(new)
    assert (await world.row_digest(doc_id) or "").startswith("blake3:")
    await world.assert_exact()


class _KeepAlive(http.server.BaseHTTPRequestHandler):
    """Answers keep-alive style; with `closes`, closes right after each answer anyway, as a
    server whose idle timeout has passed does."""

    protocol_version = "HTTP/1.1"
    closes = False
    connections: list[int] = []  # reset by the fixture

    def setup(self) -> None:
        super().setup()
        self.connections.append(id(self.connection))

    def do_GET(self) -> None:
        body = b"x" * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = self.closes

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(params=[False, True], ids=["kept-open", "closed-by-server"])
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    _KeepAlive.connections = []
    _KeepAlive.closes = request.param
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/blob"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_storage_request_cancelled_as_it_starts_leaves_no_socket_open(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while its worker thread is only taking a connection, a storage request is
    not sent, and nothing is left for the garbage collector to find open."""
    entered, release = threading.Event(), threading.Event()
    take = Connections.take

    def slow_take(self: Connections, *args: Any) -> Any:
        entered.set()
        release.wait(5)
        return take(self, *args)

    monkeypatch.setattr(Connections, "take", slow_take)
    receiver = Receiver(1, BandwidthLimiter(None))
    loop = asyncio.get_running_loop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        exchange = receiver.exchange(server, {})
        task = asyncio.create_task(receiver.open(exchange))
        assert await loop.run_in_executor(None, entered.wait, 5)
        task.cancel()
        loop.call_later(0.1, release.set)
        await asyncio.gather(task, return_exceptions=True)
        exchange.close()  # as the storage hop's `finally` does
        await loop.run_in_executor(None, receiver.close)  # the thread is done
        del exchange, task
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert _KeepAlive.connections == []  # the request never went out


@pytest.fixture
def unanswered() -> Iterator[tuple[str, int]]:
    """A loopback address whose connects hang: the listener never accepts and its backlog is
    full, so the kernel drops further SYNs (as a host behind a dropping firewall does)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    queued = [socket.socket() for _ in range(4)]
    for sock in queued:
        sock.setblocking(False)
        sock.connect_ex(address)
    try:
        yield address
    finally:
        for sock in [*queued, listener]:
            sock.close()


async def test_a_storage_request_cancelled_while_connecting_ends_without_waiting_the_connect_out(
    unanswered: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connect to a host that never answers is given up as soon as its transfer is
    cancelled, not after the 30 s connect timeout (which would hold a stopping pass)."""
    connecting = threading.Event()
    real = socket.getaddrinfo

    def watched(*args: Any, **kwargs: Any) -> Any:
        connecting.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", watched)  # where every connect begins
    receiver = Receiver(1, BandwidthLimiter(None))
    loop = asyncio.get_running_loop()
    host, port = unanswered
    exchange = receiver.exchange(f"http://{host}:{port}/file.bin", {})
    task = asyncio.create_task(receiver.open(exchange))
    assert await loop.run_in_executor(None, connecting.wait, 5)
    task.cancel()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
    assert task.cancelled()
    exchange.close()
    await loop.run_in_executor(None, receiver.close)


def test_a_connect_to_a_host_that_never_answers_times_out(unanswered: tuple[str, int]) -> None:
    with pytest.raises(TimeoutError):
        connect_unless(lambda: False, unanswered, 0.3)


def test_a_connect_to_a_closed_port_is_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()  # bound, not listening: refused
        with pytest.raises(ConnectionRefusedError):
            connect_unless(lambda: False, address, 5)


def test_connections_are_reused_and_one_the_server_closed_is_replaced(
    server: str, tmp_path: Path
) -> None:
    connections = Connections()
    try:
        for n in range(2):
            exchange = Exchange(connections, server, {})
            status, _ = exchange.open()
            assert status == 200
            with (tmp_path / f"{n}.bin").open("wb") as handle:
                assert exchange.pump(handle, _Ignore(), 1000, write_and_hash=_write)
            exchange.close()
    finally:
        connections.close()
    assert (tmp_path / "1.bin").read_bytes() == b"x" * 100
    # one connection served both; or, closed by the server, it was replaced transparently
    assert len(_KeepAlive.connections) == (2 if _KeepAlive.closes else 1)


def test_a_pump_goes_past_its_byte_limit_while_its_minimum_time_runs_and_stops_at_the_end(
    server: str, tmp_path: Path
) -> None:
    """`min_seconds` keeps a fast body streaming past `limit` (fewer checkpoints), and the
    end of the body ends the pump at once, whatever time is left."""
    connections = Connections()
    try:
        exchange = Exchange(connections, server, {})
        exchange.open()
        with (tmp_path / "body.bin").open("wb") as handle:
            assert not exchange.pump(handle, _Ignore(), 10, write_and_hash=_write, block=10)
            assert exchange.written == 10  # no minimum time: the byte limit ends the call
            started = time.monotonic()
            assert exchange.pump(
                handle, _Ignore(), 10, write_and_hash=_write, block=10, min_seconds=60
            )
            assert time.monotonic() - started < 30  # the body's end, not the minute
        exchange.close()
    finally:
        connections.close()
    assert (tmp_path / "body.bin").read_bytes() == b"x" * 100


async def test_the_writeback_of_every_finished_body_starts_at_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small bodies too: the commit batch's fsync then finds their bytes on their way."""
    sizes = {"small.bin": 50_000, "large.bin": 17 * MIB + 5}
    for n, (name, size) in enumerate(sizes.items()):
        world.add(name, payload(size, seed=90 + n))
    hinted: dict[str, list[tuple[int, int]]] = {}
    real_fadvise = os.posix_fadvise

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_DONTNEED:
            name = os.readlink(f"/proc/self/fd/{fd}")
            hinted.setdefault(name, []).append((offset, length))
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)

    _ok(await world.sync())

    assert len(hinted) == len(sizes)  # one staging file each
    for ranges in hinted.values():
        covered = 0
        for offset, length in ranges:  # contiguous steps, from the first byte ...
            assert offset == covered
            covered += length
        assert covered in sizes.values()  # ... to the last
    assert sorted(len(r) for r in hinted.values()) == [1, 2]  # 16 MiB steps, then the tail
    await world.assert_exact()


class _Ignore:
    def update(self, data: Any) -> None:
        pass


def _write(handle: Any, chunks: list[Any], digest: Any) -> None:
    for chunk in chunks:
        handle.write(chunk)
        digest.update(chunk)


async def test_downloads_go_on_while_a_batch_is_flushed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    workers = 2
    seen_while_flushing = _hold_the_first_flush(
        world, monkeypatch, workers, 4 * workers, workers + 1
    )

    _ok(await world.sync())

    # more files than the workers run at once arrived while the first batch was flushing
    assert seen_while_flushing[0] > workers
    await world.assert_exact()


async def test_every_file_is_fetched_while_the_first_batch_is_still_flushing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The jobs held waiting for a commit do not use up the room to claim: beyond the
    running and waiting ones there is room for a whole commit batch."""
    count = 12
    seen_while_flushing = _hold_the_first_flush(world, monkeypatch, 2, count, count)

    _ok(await world.sync())

    assert seen_while_flushing == [count]
    await world.assert_exact()


def _hold_the_first_flush(
    world: World, monkeypatch: pytest.MonkeyPatch, workers: int, count: int, until: int
) -> list[int]:
    """`count` small documents, `workers` at a time; the first batch's fsync waits (20 s at
    most) until `until` files were fetched. Returns the list that gets how many were."""
    for n in range(count):
        world.add(f"many-{n:03d}.pdf", payload(1000, seed=n))
    world.agent_options["max_concurrent_downloads"] = workers
    world.source_options["requests_per_minute"] = 1_000_000  # not the budget's pace either
    real_sync = Durability.sync
    seen_while_flushing: list[int] = []

    async def held_sync(self: Durability, paths: Any) -> None:
        if not seen_while_flushing:
            deadline = time.monotonic() + 20
            while len(world.storage.log.matching("GET", "/b/")) < until:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.01)
            seen_while_flushing.append(len(world.storage.log.matching("GET", "/b/")))
        await real_sync(self, paths)

    monkeypatch.setattr(Durability, "sync", held_sync)
    return seen_while_flushing
