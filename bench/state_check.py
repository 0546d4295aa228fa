"""What the state file's check at open costs, against `PRAGMA quick_check`, by database size.

    .venv/bin/python -m bench.state_check [--documents 1000000] [--keep PATH]

Builds a real state database (the migrations' schema, `--documents` mirrored documents over
four sources), then times `agent.state.damage.find_damage` (the check `sync` and `run` do
before trusting the file) and a full `PRAGMA quick_check`, warm (the file in the page cache),
median of five. Building 1,000,000 rows takes about half a minute.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

from sqlalchemy import create_engine

from agent.state import damage
from agent.state.database import upgrade

COLUMNS = (
    "source, remote_id, version, name, rel_path, size, digest, mtime_ns, state, prune, updated_at"
)


def build(path: Path, documents: int) -> None:
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        upgrade(conn)
    engine.dispose()
    with closing(sqlite3.connect(path)) as con:
        con.execute("PRAGMA journal_mode=WAL")
        con.executemany(
            f"INSERT INTO documents ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            _rows(documents),
        )
        con.commit()
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _rows(n: int) -> Iterator[tuple[object, ...]]:
    rng = random.Random(0)
    for i in range(n):
        name = f"Document {i}.pdf"
        yield (
            f"source-{i % 4}",
            f"doc-{i:08d}-{rng.getrandbits(64):016x}",
            f"v{i}",
            name,
            f"source-{i % 4}/folder {i % 100}/{name}",
            10_000 + i,
            f"blake3:{rng.getrandbits(256):064x}",
            1_700_000_000_000_000_000 + i,
            "mirrored",
            0,
            1_700_000_000.0,
        )


def median_ms(action: Callable[[], object], rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def quick_check(path: Path) -> None:
    with closing(sqlite3.connect(path)) as con:
        assert con.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the database here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "state.db"
        if not path.exists():
            build(path, args.documents)
        with closing(sqlite3.connect(path)) as con:
            pages = con.execute("PRAGMA page_count").fetchone()[0]
        assert damage.find_damage(path) is None
        mode = "quick_check" if pages <= damage.FULL_CHECK_PAGES else "sampled probe"
        print(f"{args.documents} documents, {pages} pages ({path.stat().st_size >> 20} MiB)")
        print(f"check at open ({mode}): {median_ms(lambda: damage.find_damage(path)):.1f} ms")
        print(f"PRAGMA quick_check:      {median_ms(lambda: quick_check(path)):.1f} ms")


if __name__ == "__main__":
    main()
