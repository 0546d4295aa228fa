"""The state store's parts, each on SQLite and on PostgreSQL: documents, jobs, credentials,
the status read model, and the injected clock they all read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from agent.models import DocState, JobState, RemoteDocument
from agent.state.documents import SETTLED_CHUNK, Mirrored
from agent.state.store import Store
from agent.state.tables import TokenRow
from tests.state.conftest import ManualClock
from tests.state.kit import claimed

SRC = "src"


def doc(remote_id: str, version: str = "v1", **extra: object) -> RemoteDocument:
    return RemoteDocument(remote_id=remote_id, version=version, name=f"{remote_id}.pdf", **extra)  # type: ignore[arg-type]


async def mirror(store: Store, d: RemoteDocument, data: str = "a" * 64) -> None:
    """Queue and claim a job for `d` and commit its file as mirrored."""
    job = await claimed(store, SRC, d, f"{SRC}/{d.name}")
    item = Mirrored(job.lease, d, f"{SRC}/{d.name}", 10, data, 123, None, None)
    await store.documents.commit_mirrored(SRC, [item])


# ---------------------------------------------------------------- documents


async def test_committing_a_file_records_the_document_and_retires_its_job(store: Store) -> None:
    await mirror(store, doc("a"))

    row = await store.documents.get(SRC, "a")
    assert row is not None
    assert (row.state, row.version, row.rel_path, row.digest) == (
        DocState.MIRRORED,
        "v1",
        f"{SRC}/a.pdf",
        "a" * 64,
    )
    assert await store.jobs.views() == []


async def test_a_new_version_updates_the_same_row(store: Store) -> None:
    await mirror(store, doc("a"))
    await mirror(store, doc("a", "v2"), data="b" * 64)

    row = await store.documents.get(SRC, "a")
    assert row is not None
    assert (row.version, row.digest) == ("v2", "b" * 64)
    assert list(await store.documents.known(SRC)) == ["a"]


async def test_known_documents_report_a_waiting_retry_until_the_clock_passes_it(
    store: Store, clock: ManualClock
) -> None:
    d = doc("a")
    job = await claimed(store, SRC, d, "src/a.pdf")
    await store.jobs.failed(
        job.lease, kind="transient", error="x", permanent=False, retry_in=60, bytes_done=0
    )
    await store.documents.record_states(SRC, [(d, DocState.FAILED, "x", "src/a.pdf")])

    assert (await store.documents.known(SRC))["a"].waiting_version == "v1"
    clock.now += 61
    assert (await store.documents.known(SRC))["a"].waiting_version is None


async def test_skipping_a_document_drops_its_job_and_keeps_the_reason(store: Store) -> None:
    d = doc("a", external_url="https://example.invalid/a")
    await store.jobs.enqueue(SRC, [(d, "src/a.pdf")])

    await store.documents.record_states(SRC, [(d, DocState.SKIPPED, "URL only", None)])

    row = await store.documents.get(SRC, "a")
    assert row is not None
    assert (row.state, row.reason, row.external_url) == (
        DocState.SKIPPED,
        "URL only",
        "https://example.invalid/a",
    )
    assert await store.jobs.views() == []


async def test_a_failed_new_version_keeps_the_mirrored_version_on_record(store: Store) -> None:
    await mirror(store, doc("a"))

    await store.documents.record_states(SRC, [(doc("a", "v2"), DocState.FAILED, "boom", None)])

    row = await store.documents.get(SRC, "a")
    assert row is not None
    assert (row.version, row.state, row.rel_path) == ("v1", DocState.FAILED, "src/a.pdf")


async def test_removed_and_moved_documents_are_recorded(store: Store, clock: ManualClock) -> None:
    await mirror(store, doc("a"))
    await mirror(store, doc("b"))
    clock.now += 5

    await store.documents.record_removed(SRC, ["a"])
    await store.documents.record_moves(SRC, [("b", "B.pdf", "src/new/B.pdf")])

    known = await store.documents.known(SRC)
    assert known["a"].state == DocState.REMOVED
    assert known["b"].rel_path == "src/new/B.pdf"


async def test_recorded_digests_answers_only_for_mirrored_files(store: Store) -> None:
    await mirror(store, doc("a"), data="c" * 64)
    await store.documents.record_states(SRC, [(doc("b"), DocState.PENDING, None, None)])

    assert await store.documents.recorded_digests(SRC, ["a", "b", "zz"]) == {"a": "c" * 64}


async def test_metadata_is_recorded_with_its_hash(store: Store) -> None:
    await mirror(store, doc("a"))
    await store.documents.record_metadata(SRC, "a", '{"k": 1}', "d" * 64)

    assert (await store.documents.known(SRC))["a"].metadata_hash == "d" * 64


async def test_adopting_a_placed_file_refuses_the_previous_version_and_a_held_job(
    store: Store,
) -> None:
    await mirror(store, doc("a"), data="e" * 64)
    held = await claimed(store, SRC, doc("a", "v2"), "src/a.pdf")
    job = held.spec
    assert not await store.documents.adopt_placed(job, 11, "f" * 64, 2)  # a replica holds it
    await store.jobs.release([(held.lease, None)])

    assert not await store.documents.adopt_placed(job, 10, "e" * 64, 1)  # the old bytes
    assert await store.documents.adopt_placed(job, 11, "f" * 64, 2)

    row = await store.documents.get(SRC, "a")
    assert row is not None
    assert (row.version, row.digest, row.size) == ("v2", "f" * 64, 11)
    assert await store.jobs.views() == []


# ---------------------------------------------------------------- credentials and cursors


async def test_tokens_are_encrypted_at_rest_and_the_latest_is_loaded(store: Store) -> None:
    expiry = datetime(2030, 1, 1, tzinfo=UTC)
    for i in range(7):
        await store.credentials.save_token(SRC, "refresh", f"secret-{i}", expiry)

    loaded = await store.credentials.load_token(SRC, "refresh")

    assert loaded is not None
    assert (loaded.value, loaded.expires_at) == ("secret-6", expiry)
    async with store.db.session() as s:
        stored = list(await s.scalars(select(TokenRow.value)))
    assert len(stored) == 5  # a short history of rotated tokens
    assert not any("secret" in value for value in stored)


async def test_a_token_from_another_key_reads_as_missing(state_url: str, tmp_path: Path) -> None:
    async with Store.open(state_url, tmp_path / "one") as store:
        await store.credentials.save_token(SRC, "refresh", "secret", None)
    async with Store.open(state_url, tmp_path / "two") as store:
        assert await store.credentials.load_token(SRC, "refresh") is None


async def test_a_source_sees_only_its_own_cursors(store: Store) -> None:
    mine, other = store.for_source(SRC), store.for_source("other")
    await mine.save_cursor("page", "1")
    await mine.save_cursor("page", "2")
    await other.save_cursor("page", "x")

    assert await mine.load_cursor("page") == "2"
    await mine.save_cursor("page", None)
    assert await mine.load_cursor("page") is None
    assert await other.load_cursor("page") == "x"


# ---------------------------------------------------------------- status read model


async def test_status_reports_plain_counts_jobs_and_skips_of_configured_sources(
    store: Store, clock: ManualClock
) -> None:
    await store.status.pass_started(SRC, "standard-metrics")
    await mirror(store, doc("a"))
    job = await claimed(store, SRC, doc("b"), "src/b.pdf")
    await store.jobs.failed(
        job.lease, kind="transient", error="503", permanent=False, retry_in=9, bytes_done=0
    )
    await store.documents.record_states(SRC, [(doc("c"), DocState.SKIPPED, "URL only", None)])
    clock.now += 3
    await store.status.pass_finished(SRC, False, "503")
    await store.status.pass_started("gone", "huddle")

    (status,) = await store.status.sources([SRC])

    assert (status.name, status.type, status.documents) == (SRC, "standard-metrics", 2)
    assert (status.count(DocState.MIRRORED), status.count(DocState.SKIPPED)) == (1, 1)
    assert (status.last_pass_started, status.last_pass_finished) == (clock.now - 3, clock.now)
    assert (status.last_pass_ok, status.last_error) == (False, "503")
    assert [(j.remote_id, j.state) for j in status.jobs] == [("b", JobState.RETRY)]
    assert [(s.remote_id, s.reason) for s in status.skipped] == [("c", "URL only")]
    assert [s.name for s in await store.status.sources()] == ["gone", SRC]


async def test_the_store_reads_the_time_from_its_clock_only(
    store: Store, clock: ManualClock
) -> None:
    """Every timestamp written comes from the injected clock (here far in the past)."""
    clock.now = 42.0
    await store.status.pass_started(SRC, "huddle")
    await mirror(store, doc("a"))
    await store.credentials.save_token(SRC, "access", "t", None)
    await store.for_source(SRC).save_cursor("k", "v")

    async with store.db.connect() as conn:
        stamps = {
            table: set((await conn.exec_driver_sql(f"SELECT {column} FROM {table}")).scalars())
            for table, column in (
                ("sources", "last_pass_started"),
                ("documents", "updated_at"),
                ("tokens", "created_at"),
                ("cursors", "updated_at"),
            )
        }
    assert stamps == {t: {42.0} for t in ("sources", "documents", "tokens", "cursors")}


Probed = tuple[str, str, str, str | None]  # id, version, the path it wants, metadata hash


def columns(listed: list[Probed]) -> tuple[list[str], list[str], list[str], list[str | None]]:
    """Listed documents as the columns `unsettled` takes."""
    return (
        [row[0] for row in listed],
        [row[1] for row in listed],
        [row[2] for row in listed],
        [row[3] for row in listed],
    )


async def test_unsettled_names_exactly_the_listed_documents_a_pass_must_look_at(
    store: Store,
) -> None:
    await mirror(store, doc("same"))
    await mirror(store, doc("older"))
    await mirror(store, doc("moved"))
    await mirror(store, doc("meta"))
    await store.documents.record_metadata(SRC, "meta", "{}", "h1")
    await store.documents.record_states(SRC, [(doc("failed"), DocState.FAILED, "x", "src/f")])

    listed: list[Probed] = [
        ("same", "v1", "src/same.pdf", None),
        ("older", "v2", "src/older.pdf", None),  # a new version
        ("moved", "v1", "src/elsewhere.pdf", None),  # renamed
        ("meta", "v1", "src/meta.pdf", "h2"),  # its metadata changed
        ("failed", "v1", "src/f", None),  # not mirrored
        ("new", "v1", "src/new.pdf", None),  # unknown
    ]

    assert await store.documents.unsettled(SRC, *columns(listed)) == {
        "older",
        "moved",
        "meta",
        "failed",
        "new",
    }
    meta: list[Probed] = [("meta", "v1", "src/meta.pdf", "h1")]
    assert await store.documents.unsettled(SRC, *columns(meta)) == set()
    # a window listing no metadata is compared without it (the statement has no such column)
    plain = [row for row in listed if row[3] is None] + [("meta", "v1", "src/meta.pdf", None)]
    assert await store.documents.unsettled(SRC, *columns(plain)) == {
        "older",
        "moved",
        "failed",
        "new",
    }
    assert await store.documents.unsettled(SRC, *columns(plain)[:3]) == {
        "older",
        "moved",
        "failed",
        "new",
    }
    other: list[Probed] = [("same", "v1", "src/same.pdf", None)]
    assert await store.documents.unsettled("other", *columns(other)) == {"same"}


async def test_unsettled_compares_a_listing_longer_than_one_statement_row_by_row(
    store: Store,
) -> None:
    """Documents compared a statement's worth at a time keep their own version and path."""
    await mirror(store, doc("d0001"))
    await mirror(store, doc("d2100"))
    ids = [f"d{i:04}" for i in range(SETTLED_CHUNK * 2 + 101)]
    paths = [f"src/{rid}.pdf" for rid in ids]
    versions = ["v1"] * len(ids)
    versions[1] = "v2"  # d0001: a new version
    assert await store.documents.unsettled(SRC, ids, versions, paths) == set(ids) - {"d2100"}
