"""A damaged SQLite state file: found at open in milliseconds, set aside (never deleted) with
its journal by the lock holder, refused by others, and met mid-pass as a named error."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.errors import CorruptStateError, StateError
from agent.models import RemoteDocument
from agent.state import damage
from agent.state.documents import Mirrored
from agent.state.store import Store
from tests.state.conftest import ManualClock
from tests.state.kit import LEASE, OWNER

SRC = "src"
GARBAGE = b"\xde\xad\xbe\xef" * 1024  # 4 KiB


async def populated(tmp_path: Path, documents: int = 300) -> Path:
    """A real state database holding `documents` mirrored documents; returns its path."""
    path = tmp_path / "state.db"
    async with Store.open(f"sqlite+aiosqlite:///{path}", tmp_path) as store:
        docs = [RemoteDocument(f"doc-{i:04d}", "v1", f"Document {i}.pdf") for i in range(documents)]
        await store.jobs.enqueue(SRC, [(d, f"{SRC}/{d.name}") for d in docs])
        jobs = await store.jobs.claim(OWNER, [SRC], documents, LEASE)
        await store.documents.commit_mirrored(
            SRC,
            [Mirrored(j.lease, j.doc, j.spec.rel_path, 1, "0" * 64, 1, None, None) for j in jobs],
        )
    return path


def garble_page(path: Path, page: int) -> None:
    """Overwrite one whole page (1-based, as SQLite numbers them) with garbage."""
    with closing(sqlite3.connect(path)) as con:
        size = con.execute("PRAGMA page_size").fetchone()[0]
    with path.open("r+b") as handle:
        handle.seek((page - 1) * size)
        handle.write((GARBAGE * (size // len(GARBAGE) + 1))[:size])


def root_page(path: Path, table: str) -> int:
    with closing(sqlite3.connect(path)) as con:
        (page,) = con.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()
    return int(page)


def garble_middle(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size // 4)
        handle.write((GARBAGE * (size // len(GARBAGE) + 1))[: size // 2])


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (b"PK\x03\x04" + bytes(96), "no SQLite header"),
        (damage.MAGIC + b"\x03\x00" + bytes(82), "page size 768"),
        (damage.MAGIC + b"\x10\x00\x01\x01\x00" + b"\x40\x20\x21" + bytes(76), "fractions"),
        (damage.MAGIC[:10], "no SQLite header"),
    ],
)
def test_a_bad_header_is_named(header: bytes, words: str) -> None:
    problem = damage.header_problem(header)
    assert problem is not None
    assert words in problem


async def test_a_healthy_database_passes_the_check(tmp_path: Path) -> None:
    assert damage.find_damage(await populated(tmp_path)) is None


async def test_garbage_over_the_middle_of_the_file_is_found(tmp_path: Path) -> None:
    path = await populated(tmp_path)
    garble_middle(path)
    assert damage.find_damage(path) is not None


def test_a_file_that_is_not_sqlite_is_found(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_text("not a database, just words\n" * 100)
    assert damage.find_damage(path) == "file is not a database (no SQLite header)"


def test_an_empty_file_is_a_new_database_not_damage(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch()
    assert damage.find_damage(path) is None


async def test_the_sampled_probe_of_a_large_database_finds_a_damaged_table_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above FULL_CHECK_PAGES no quick_check runs: the probe walks every b-tree instead."""
    path = await populated(tmp_path)
    monkeypatch.setattr(damage, "FULL_CHECK_PAGES", 0)
    assert damage.find_damage(path) is None
    garble_page(path, root_page(path, "documents"))
    assert damage.find_damage(path) is not None


async def test_the_sampled_probe_finds_a_damaged_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = await populated(tmp_path)
    monkeypatch.setattr(damage, "FULL_CHECK_PAGES", 0)
    garble_page(path, root_page(path, "sqlite_autoindex_documents_1"))
    assert damage.find_damage(path) is not None


async def test_the_lock_holder_sets_a_damaged_file_aside_with_its_journal_and_starts_afresh(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "state.db"
    kept = {s: Path(f"{path}{s}") for s in ("", "-wal", "-shm")}
    kept[""].write_bytes(b"damaged beyond recognition")
    kept["-wal"].write_bytes(b"wal bytes")
    kept["-shm"].write_bytes(b"shm bytes")
    before = {s: p.read_bytes() for s, p in kept.items()}

    with capture_logs() as logs:
        async with Store.open(
            f"sqlite+aiosqlite:///{path}", tmp_path, clock=clock, repair=True
        ) as s:
            assert await s.documents.known(SRC) == {}
            aside = s.db.rebuilt_from

    assert aside == tmp_path / "state.damaged-20231114T221320Z.db"
    assert {s: Path(f"{aside}{s}").read_bytes() for s in kept} == before
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert (warning["database"], warning["set_aside"]) == (str(path), str(aside))
    assert damage.find_damage(path) is None  # the fresh one


async def test_garbage_in_the_middle_is_set_aside_at_open(tmp_path: Path) -> None:
    path = await populated(tmp_path)
    garble_middle(path)
    damaged = path.read_bytes()

    async with Store.open(f"sqlite+aiosqlite:///{path}", tmp_path, repair=True) as store:
        aside = store.db.rebuilt_from
        assert await store.documents.known(SRC) == {}

    assert aside is not None
    assert aside.read_bytes() == damaged


async def test_a_second_damaged_file_never_overwrites_the_first_copy(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "state.db"
    asides = []
    for text in ("first", "second"):
        path.write_text(text)
        async with Store.open(
            f"sqlite+aiosqlite:///{path}", tmp_path, clock=clock, repair=True
        ) as s:
            asides.append(s.db.rebuilt_from)
    assert asides[0] != asides[1]
    assert [p.read_text() for p in asides if p] == ["first", "second"]


async def test_an_opener_without_the_lock_refuses_a_damaged_file_and_leaves_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    path.write_text("not a database")

    with pytest.raises(CorruptStateError) as caught:
        async with Store.open(f"sqlite+aiosqlite:///{path}", tmp_path):
            pass

    assert "sync-agent sync" in str(caught.value)
    assert path.read_text() == "not a database"
    assert sorted(p.name for p in tmp_path.iterdir() if "damaged" in p.name) == []


async def test_damage_met_during_a_pass_is_a_named_error_and_the_next_open_rebuilds(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = await populated(tmp_path)
    url = f"sqlite+aiosqlite:///{path}"
    async with Store.open(url, tmp_path, repair=True) as store:
        await store.db.engine.dispose()  # the next read comes from the file, not a cache
        garble_page(path, root_page(path, "documents"))

        with pytest.raises(CorruptStateError) as caught:
            await store.documents.known(SRC)

    message = str(caught.value)
    assert "database disk image is malformed" in message
    assert "SELECT" not in message
    assert "sqlalche.me" not in message
    assert damage.marker_path(path).exists()
    async with Store.open(url, tmp_path, clock=clock, repair=True) as store:
        assert store.db.rebuilt_from is not None
        assert store.db.rebuilt_from.exists()
        assert await store.documents.known(SRC) == {}
    assert not damage.marker_path(path).exists()


async def test_a_state_file_inside_a_regular_file_is_a_plain_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(StateError) as caught:
        async with Store.open(f"sqlite+aiosqlite:///{blocker}/state.db", tmp_path):
            pass
    assert str(blocker) in str(caught.value)
    assert "Traceback" not in str(caught.value)
