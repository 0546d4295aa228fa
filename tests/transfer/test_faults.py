"""Fault injection against the sandbox: every fault ends in a byte-exact mirror (issue 3)."""

from __future__ import annotations

import asyncio
import errno
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from transfer_kit import World, payload

from agent.models import PassStats
from agent.transfer import bodies

MIB = 1024 * 1024


def _ok(outcome: PassStats | BaseException) -> PassStats:
    assert isinstance(outcome, PassStats), outcome
    assert outcome.failed == 0, outcome.errors
    return outcome


def _cut(world: World, after: int) -> None:
    """Drop the connection after `after` bytes, once; the body is paced so that what was
    sent has arrived when the connection is reset (a reset discards unread socket data)."""
    faults = world.storage.faults
    faults.cut_after, faults.cut_times, faults.bytes_per_second = after, 1, 8_000_000


def _mirror_files(world: World) -> list[str]:
    return [str(p) for p in world.mirror.rglob("*") if p.is_file() and ".sync-agent" not in p.parts]


def _ranges(world: World) -> list[str]:
    return [r.headers.get("range", "") for r in world.storage.log.matching("GET", "/b/")]


async def test_connection_cut_mid_body_resumes_from_the_bytes_kept(world: World) -> None:
    data = payload(2 * MIB)
    world.add("cut.bin", data)
    _cut(world, 700_000)

    _ok(await world.sync())

    await world.assert_exact()
    ranges = _ranges(world)
    assert ranges[0] == ""
    assert ranges[1].startswith("bytes=")
    assert ranges[1] != "bytes=0-"
    assert world.storage.bytes_sent < len(data) + 700_000  # resumed, not started over


async def test_body_shorter_than_content_length_is_resumed_not_accepted(world: World) -> None:
    data = payload(MIB, seed=1)
    world.add("short.bin", data)
    world.storage.faults.short_by, world.storage.faults.short_times = 1000, 1

    _ok(await world.sync())

    await world.assert_exact()
    resumed_at = int(_ranges(world)[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(data) - 1000  # never trusts bytes that did not arrive


@pytest.mark.parametrize("status", [500, 503])
async def test_error_storm_on_the_api_is_ridden_out(world: World, status: int) -> None:
    doc_id = world.add("storm.pdf", payload(300_000, seed=2))
    world.sandbox.faults.add(f"/v1/documents/{doc_id}/download/", status, times=4)

    _ok(await world.sync())

    await world.assert_exact()
    assert len(world.sleeps.pauses) == 4  # one back-off per scripted failure


@pytest.mark.parametrize("status", [500, 503])
async def test_error_storm_on_the_storage_host_is_ridden_out(world: World, status: int) -> None:
    world.add("storm.pdf", payload(300_000, seed=3))
    world.storage.plan.add("/b/", status, times=4)

    _ok(await world.sync())

    await world.assert_exact()
    assert len(world.storage.log.matching("GET", "/b/")) == 5


async def test_listing_storm_is_ridden_out(world: World) -> None:
    world.add("a.pdf", payload(1000, seed=4))
    world.sandbox.faults.add("/v1/documents/", 503, times=3, method="GET")

    _ok(await world.sync())

    await world.assert_exact()


async def test_429_with_retry_after_waits_as_told(world: World) -> None:
    doc_id = world.add("throttled.pdf", payload(5000, seed=5))
    world.sandbox.faults.add(
        f"/v1/documents/{doc_id}/download/",
        429,
        headers={"Retry-After": "1"},
        body={"detail": "Request was throttled. Expected available in 1 second."},
    )
    started = time.monotonic()

    _ok(await world.sync())

    await world.assert_exact()
    assert world.sleeps.pauses == [1.0]
    # the whole source paused for the server's second, not only this download
    downloads = world.sandbox.log.matching("GET", f"/v1/documents/{doc_id}/download/")
    assert downloads[1].time - downloads[0].time >= 0.9
    assert time.monotonic() - started < 5


async def test_429_without_retry_after_backs_off(world: World) -> None:
    doc_id = world.add("throttled.pdf", payload(5000, seed=6))
    world.sandbox.faults.add(
        f"/v1/documents/{doc_id}/download/", 429, body={"detail": "Request was throttled."}
    )

    _ok(await world.sync())

    await world.assert_exact()
    assert len(world.sleeps.pauses) == 1
    assert 0.0 <= world.sleeps.pauses[0] <= 1.0


class TokensDieAtTheFourthDownload:
    """The sandbox's clock: real time until the fourth download call arrives, then two hours
    later, so that every token issued before has expired while the others are in flight."""

    def __init__(self, world: World) -> None:
        self.world = world

    def __call__(self) -> float:
        calls = self.world.sandbox.log.matching("GET", "/v1/documents/")
        downloads = sum(1 for r in calls if r.path.endswith("/download/"))
        return time.time() + (7200.0 if downloads >= 4 else 0.0)


async def test_a_token_dying_under_eight_concurrent_downloads_fails_nothing(world: World) -> None:
    """Expiry with downloads in flight renews once; no document fails, no exit 77 (issue 11)."""
    world.agent_options["max_concurrent_downloads"] = 8
    for i in range(16):
        world.add(f"doc-{i:02d}.pdf", payload(3000 + i, seed=40 + i))
    world.sandbox.clock = TokensDieAtTheFourthDownload(world)

    outcome = _ok(await world.sync())

    assert outcome.downloaded == 16
    await world.assert_exact()
    assert world.sandbox.tokens_issued == 2
    calls = [r for r in world.sandbox.log.records if r.path.endswith("/download/")]
    assert len(calls) > 16  # some first hops really were refused and sent again


async def test_signed_url_expiring_mid_download_gets_a_new_url_and_resumes(
    world: World,
) -> None:
    doc_id = world.add("expiring.bin", payload(2 * MIB, seed=7))
    _cut(world, 600_000)
    # after the cut, the URL the agent retries with has expired
    world.sleeps.hooks.append(lambda: setattr(world.storage.faults, "expire_times", 1))

    _ok(await world.sync())

    await world.assert_exact()
    api = world.sandbox.log.matching("GET", f"/v1/documents/{doc_id}/download/")
    assert len(api) == 3  # the first URL, one refused as expired, then a fresh one
    _, expired, fresh = world.storage.log.matching("GET", "/b/")
    assert fresh.headers.get("range") == expired.headers.get("range")  # the partial was kept
    assert fresh.headers.get("range", "bytes=0-") != "bytes=0-"


async def test_etag_change_between_attempts_discards_the_partial(world: World) -> None:
    old, new = payload(2 * MIB, seed=8), payload(MIB + 12345, seed=9)
    doc_id = world.add("changing.bin", old)
    key = world.blob_key(doc_id)
    _cut(world, 900_000)
    world.sleeps.hooks.append(lambda: world.storage.put(key, new))

    _ok(await world.sync())

    path = await world.mirrored_path(doc_id)
    assert path is not None
    assert path.read_bytes() == new
    assert await world.row_digest(doc_id) == world.digest(new)
    retry = world.storage.log.matching("GET", "/b/")[1]
    assert retry.headers.get("if-range")  # the resume was guarded by the old ETag


async def test_server_ignoring_range_starts_over_with_right_bytes(world: World) -> None:
    data = payload(2 * MIB, seed=10)
    world.add("norange.bin", data)
    _cut(world, 500_000)
    world.sleeps.hooks.append(lambda: setattr(world.storage.faults, "ignore_range", True))

    _ok(await world.sync())

    await world.assert_exact()
    assert _ranges(world)[1].startswith("bytes=")  # asked for a range, got the whole body
    assert world.storage.bytes_sent == 500_000 + len(data)


async def test_slow_body_arrives_whole(world: World) -> None:
    data = payload(400_000, seed=11)
    world.add("slow.bin", data)
    world.storage.faults.bytes_per_second = 1_600_000
    started = time.monotonic()

    _ok(await world.sync())

    assert time.monotonic() - started >= 0.2  # the body really trickled
    await world.assert_exact()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`cmd_sync` points structlog at this test's captured stderr; undo that afterwards."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("restore_logging")
async def test_disk_full_keeps_the_partial_and_the_next_run_completes(
    world: World, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    data = payload(2 * MIB, seed=12)
    world.add("big.bin", data)
    real = bodies.write_and_hash
    calls = {"n": 0, "written": 0}

    def full_disk(handle: Any, chunks: list[bytes], digest: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(handle, chunks, digest)
        calls["written"] += sum(len(c) for c in chunks)

    monkeypatch.setattr(bodies, "write_and_hash", full_disk)
    from agent import cli  # noqa: PLC0415 - the CLI's own exit-code mapping is under test

    args = cli.build_parser().parse_args(["--config", str(world.write_config()), "sync"])
    assert await cli.cmd_sync(args) == 1
    err = capfd.readouterr()
    assert "disk is full" in err.out + err.err

    partials = list(world.staging.iterdir())
    assert len(partials) == 1
    assert partials[0].stat().st_size == calls["written"] >= 2 * bodies.WRITE_BLOCK
    assert _mirror_files(world) == []  # nothing partial under a final name

    monkeypatch.setattr(bodies, "write_and_hash", real)
    world.storage.log.clear()
    _ok(await world.sync())

    await world.assert_exact()
    assert _ranges(world) == [f"bytes={calls['written']}-"]


async def _status_json(world: World) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "--config",
        str(world.write_config()),
        "status",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


def _hold_body(world: World, monkeypatch: pytest.MonkeyPatch, size: int) -> asyncio.Event:
    """The storage host holds the body of a `size`-byte blob until the event is set."""
    release = asyncio.Event()
    stream = world.storage._stream

    async def held(request: Any, response: Any, body: memoryview) -> None:
        if len(body) == size:
            await release.wait()
        await stream(request, response, body)

    monkeypatch.setattr(world.storage, "_stream", held)
    return release


async def test_status_shows_in_progress_waiting_and_permanently_failed_jobs(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = world.add("gone.pdf", payload(1000, seed=30))
    flaky = world.add("flaky.pdf", payload(1000, seed=31))
    slow = world.add("slow.bin", payload(3 * MIB, seed=32))
    world.sandbox.faults.add(
        f"/v1/documents/{gone}/download/", 404, times=100, body={"detail": "Not found."}
    )
    world.storage.plan.add(f"/b/standard-metrics/{flaky}/", 503, times=100)
    release = _hold_body(world, monkeypatch, 3 * MIB)  # slow.bin stays in progress

    sync = asyncio.create_task(world.sync())
    while not world.storage.log.matching("GET", f"/b/standard-metrics/{slow}/"):
        await asyncio.sleep(0.02)
    for _ in range(20):  # bounded: the two failures are recorded within a read or two
        (source,) = (await _status_json(world))["sources"]
        jobs = {job["remote_id"]: job for job in source["jobs"]}
        if {jobs.get(flaky, {}).get("state"), jobs.get(gone, {}).get("state")} == {
            "waiting-to-retry",
            "permanently-failed",
        }:
            break
    release.set()
    outcome = await sync

    assert jobs[slow]["state"] == "in-progress"
    assert jobs[flaky]["state"] == "waiting-to-retry"
    assert jobs[flaky]["error_kind"] == "transient"
    assert "HTTP 503" in jobs[flaky]["last_error"]
    assert jobs[flaky]["next_retry_at"] is not None
    assert jobs[gone]["state"] == "permanently-failed"
    assert jobs[gone]["error_kind"] == "permanent"
    assert "not found" in jobs[gone]["last_error"]
    assert isinstance(outcome, PassStats)
    assert (outcome.downloaded, outcome.failed) == (1, 2)
    after = {job["remote_id"] for job in (await _status_json(world))["sources"][0]["jobs"]}
    assert after == {gone, flaky}  # the finished download's job is gone
