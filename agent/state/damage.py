"""A damaged SQLite state file: the check at open, the marker a pass leaves, the move aside.

`PRAGMA quick_check` reads every page: 0.5 to 1.5 s warm, about 10 s cold on a
1,000,000-document database. So the check at open costs milliseconds at any size:

1. the 100-byte header (magic string, page size, fixed payload fractions): catches a file
   that is not SQLite at all or whose first page was overwritten;
2. the schema (`sqlite_master`) and the page count: page 1 and the schema b-tree;
3. up to `FULL_CHECK_PAGES` pages (2 MiB at 4 KiB pages, ~7,000 documents), the complete
   `quick_check`, which costs no more there than the probe; above that a bounded probe:
   both edges of every table and index, and `SAMPLES` rows spread evenly over each table's
   rowid range (read in full), which walks every b-tree's interior pages from the root
   along those paths.

Measured with `python -m bench.state_check` (2 cores under load 4): 1,000,000 documents
(339 MiB): the check 13 ms warm, 23-34 ms with the file evicted from the page cache;
`quick_check` 1,475 ms warm, 9,875 ms cold. 2,000 documents: the check 8 ms.

Damage the probe does not touch surfaces later as SQLITE_CORRUPT / SQLITE_NOTADB; the
boundary (`agent.state.database.translated`) then leaves a marker beside the file, which
this check honours, so the next open sets the file aside whatever the probe would see.
A damaged file is never deleted: it and its -wal/-shm move aside under a timestamped name.
The probe opens the file as any SQLite client does, so a WAL a crash left behind is
replayed into it first (SQLite's own recovery; nothing is lost by it).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
DAMAGE_CODES = frozenset({SQLITE_CORRUPT, SQLITE_NOTADB})
DAMAGE_WORDS = ("database disk image is malformed", "file is not a database")
MAGIC = b"SQLite format 3\x00"
FULL_CHECK_PAGES = 512
SAMPLES = 64
MARKER_SUFFIX = ".damaged"
COMPANIONS = ("-wal", "-shm")  # moved first: a stale WAL must never meet a fresh database


def is_corruption(exc: BaseException) -> bool:
    """Is this (or the driver error it wraps) SQLITE_CORRUPT or SQLITE_NOTADB?"""
    cause = getattr(exc, "orig", None) or exc
    code = getattr(cause, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in DAMAGE_CODES  # extended codes keep the primary in the low byte
    return isinstance(cause, sqlite3.DatabaseError) and any(w in str(cause) for w in DAMAGE_WORDS)


def find_damage(path: Path) -> str | None:
    """Why the file at `path` cannot be trusted, or None (milliseconds, whatever its size)."""
    if not path.exists():
        marker_path(path).unlink(missing_ok=True)  # nothing left to set aside
        return None
    if path.stat().st_size == 0:
        return None  # SQLite starts an empty file as a new database
    with path.open("rb") as handle:
        problem = _marked(path) or header_problem(handle.read(100))
    if problem is not None:
        return problem
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True)
        ) as con:
            return probe(con)
    except sqlite3.DatabaseError as exc:
        if is_corruption(exc):
            return str(exc)
        return None  # locked, unreadable...: not damage; the real open reports it


def _marked(path: Path) -> str | None:
    """The reason a pass left beside the file when it met the damage, if it did."""
    marker = marker_path(path)
    if not marker.exists():
        return None
    return marker.read_text(errors="replace").strip() or "a pass found it damaged"


def header_problem(header: bytes) -> str | None:
    """What is wrong with the first 100 bytes of an SQLite file, or None."""
    if len(header) < 100 or not header.startswith(MAGIC):
        return "file is not a database (no SQLite header)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"file is not a database (page size {page_size})"
    if header[21:24] != bytes((64, 32, 32)):
        return "database disk image is malformed (header payload fractions)"
    return None


def probe(con: sqlite3.Connection) -> str | None:
    """Read the schema and check the b-trees: completely when small, by sample when large."""
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    objects = con.execute(
        "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"
    ).fetchall()
    if pages <= FULL_CHECK_PAGES:
        (result,) = con.execute("PRAGMA quick_check(1)").fetchone()
        return None if result == "ok" else str(result)
    for kind, name, table in objects:
        if kind == "table":
            _walk_table(con, name)
        else:
            _walk_index(con, name, table)
    return None


def _walk_table(con: sqlite3.Connection, table: str) -> None:
    quoted = _quote(table)
    try:
        first = con.execute(f"SELECT rowid FROM {quoted} ORDER BY rowid LIMIT 1").fetchone()  # noqa: S608
    except sqlite3.OperationalError as exc:
        if is_corruption(exc):
            raise
        return  # a table without rowid: its edges are walked as its primary key index
    last = con.execute(f"SELECT rowid FROM {quoted} ORDER BY rowid DESC LIMIT 1").fetchone()  # noqa: S608
    if first is None:
        return
    low, high = first[0], last[0]
    seek = f"SELECT * FROM {quoted} WHERE rowid >= ? LIMIT 1"  # noqa: S608
    for i in range(SAMPLES):
        con.execute(seek, (low + (high - low) * i // (SAMPLES - 1),)).fetchall()


def _walk_index(con: sqlite3.Connection, index: str, table: str) -> None:
    columns = [row[2] for row in con.execute(f"PRAGMA index_info({_quote(index)})")]
    if not columns or None in columns:
        return  # an expression index: reached through its table
    names = ", ".join(_quote(c) for c in columns)
    for order in ("ASC", "DESC"):
        by = ", ".join(f"{_quote(c)} {order}" for c in columns)
        con.execute(
            f"SELECT {names} FROM {_quote(table)} INDEXED BY {_quote(index)} "  # noqa: S608
            f"ORDER BY {by} LIMIT 1"
        ).fetchall()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def marker_path(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def leave_marker(path: Path, reason: str) -> None:
    """Note beside the file that it was found damaged, for the next open (best effort)."""
    with contextlib.suppress(OSError):
        marker_path(path).write_text(reason + "\n")


def set_aside(path: Path, now: float) -> Path:
    """Move the file and its -wal/-shm to `<stem>.damaged-<UTC time><suffix>`; never delete.

    The three keep SQLite's naming, so the set-aside copy still opens with its journal.
    """
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.stem}.damaged-{stamp}{path.suffix}")
    count = 1
    while any(Path(f"{aside}{s}").exists() for s in ("", *COMPANIONS)):
        count += 1
        aside = path.with_name(f"{path.stem}.damaged-{stamp}-{count}{path.suffix}")
    for suffix in (*COMPANIONS, ""):
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{aside}{suffix}")
    marker_path(path).unlink(missing_ok=True)
    return aside  # not fsynced: after a power loss the file is found damaged and moved again
