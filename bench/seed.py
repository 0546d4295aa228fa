"""The state of a mirror that already holds a whole listing, written directly (cached in data/).

A re-poll measures a pass over documents the agent already mirrors. Producing that state
for 1,000,000 documents with a real first pass would take the current agent a quarter of an
hour, so `seed_mirrored_state` writes what such a pass leaves behind: one file per document
and one `documents` row per file. It goes through plain SQL on the tables documented in
`agent/state/tables.py`, not through the store's Python API, so that it keeps working while
that API changes; when the tables change, adapt that one function (the cache notices the
change and seeds again). The schema itself comes from the agent: `sync-agent status` opens
the empty database and applies the migrations.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import blake3

from bench import subject
from bench.data import file_name
from bench.listing import Listing, doc_id, uploaded_at
from bench.measure import run
from bench.nginx import TINY_BODY
from bench.settings import SOURCE, Settings

AGENT_STATE = Path(__file__).resolve().parents[1] / "agent" / "state"
LINKS_PER_INODE = 50_000  # ext4 allows 65,000 hard links to one inode


def seed_mirrored_state(db: Path, mirror: Path, listing: Listing, body: bytes) -> None:
    """Write what a finished pass over `listing` leaves: every file in place, every row.

    `db` is a SQLite state database that already has the agent's schema and no documents;
    `mirror` is the mirror folder. Document `i` (`bench.listing.document`) becomes:

    - the file `<mirror>/<SOURCE>/<file_name(i)>` holding `body` (what its download
      returns). The files are hard links to one inode per 50,000 documents: the agent does
      not read them on a re-poll, and 1,000,000 separate 27-byte files would take 4 GB of
      4 KiB blocks. Where a link fails, a separate file is written instead.
    - a `documents` row as the store writes it after placing the file: state `mirrored`,
      `version` = the listed `uploaded_at` (the Standard Metrics source's version), the
      relative path, size, digest (`blake3:<hex>`, the default) and mtime of the file, no
      metadata, no prune, no job.
    """
    folder = mirror / SOURCE
    folder.mkdir(parents=True, exist_ok=True)
    digest = f"blake3:{blake3.blake3(body).hexdigest()}"
    now = time.time()

    def rows() -> Iterator[tuple[object, ...]]:
        origin, links, mtime_ns = folder / file_name(0), LINKS_PER_INODE, 0
        for i in range(listing.count):
            name = file_name(i)
            path = folder / name
            if links >= LINKS_PER_INODE or not _link(origin, path):
                path.write_bytes(body)
                origin, links, mtime_ns = path, 0, path.stat().st_mtime_ns
            links += 1
            remote_id, version = doc_id(listing.folder, i), uploaded_at(i)
            yield (
                SOURCE,
                remote_id,
                version,
                name,
                f"{SOURCE}/{name}",
                len(body),
                digest,
                mtime_ns,
                "mirrored",
                now,
            )

    conn = sqlite3.connect(db)
    try:
        with conn:  # one transaction
            conn.executemany(
                "INSERT INTO documents (source, remote_id, version, name, rel_path, size,"
                " digest, mtime_ns, state, updated_at, reason, external_url, metadata_json,"
                " metadata_hash, prune) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " NULL, NULL, NULL, NULL, 0)",
                rows(),
            )
    finally:
        conn.close()


def _link(origin: Path, path: Path) -> bool:
    try:
        os.link(origin, path)
    except OSError:
        return False
    return True


def ensure_state(s: Settings, listing: Listing) -> Path:
    """`data/state/<set>/` with `mirror/` and `state/` seeded for `listing`, unless cached.

    The cache is keyed by the listing and by the agent's table and migration sources, so a
    schema change seeds again.
    """
    root = s.data_dir / "state" / listing.name
    marker = s.data_dir / "state" / f".{listing.name}.complete.json"
    want = json.dumps({**asdict(listing), "schema": _schema_fingerprint(), "format": 1})
    if marker.is_file() and marker.read_text() == want:
        return root
    print(f"seeding the state of a mirror of {listing.count:,} documents")
    marker.unlink(missing_ok=True)
    config = subject.write_config(root, "http://127.0.0.1:9", listing, s.concurrency)
    created = run([*subject.binary(), "--config", str(config), "status", "--json"], log=s.log)
    if created.returncode != 0:
        raise SystemExit(f"`sync-agent status` could not create the state (see {s.log})")
    seed_mirrored_state(root / "state" / "state.db", root / "mirror", listing, TINY_BODY)
    marker.write_text(want)
    return root


def forget_state(s: Settings, listing: Listing) -> None:
    """Drop the cached state (a pass changed it, so the next run seeds again)."""
    (s.data_dir / "state" / f".{listing.name}.complete.json").unlink(missing_ok=True)
    shutil.rmtree(s.data_dir / "state" / listing.name, ignore_errors=True)


def _schema_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted([AGENT_STATE / "tables.py", *AGENT_STATE.glob("migrations/versions/*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
