"""Deterministic data sets, generated once under `bench/data/` and reused by every run.

File names follow the sandbox's listing-only names (`report-000000.pdf`, ...), so the
sandbox can redirect document i to the nginx path of file i and every tool mirrors the
same tree.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Spec:
    """A data set: `(count, size)` groups of files, in listing order, under `name/`."""

    name: str
    groups: tuple[tuple[int, int], ...]

    @property
    def sizes(self) -> list[int]:
        return [size for count, size in self.groups for _ in range(count)]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)


FULL = {
    "bulk": Spec("bulk", ((8, 128 * MiB), (1000, MiB))),
    "small": Spec("small", ((20_000, 4 * KiB),)),
    "resume": Spec("resume", ((1, 1024 * MiB),)),
}
QUICK = {
    "bulk": Spec("bulk-quick", ((2, 2 * MiB), (18, 64 * KiB))),
    "small": Spec("small-quick", ((20, 4 * KiB),)),
    "resume": Spec("resume-quick", ((1, 16 * MiB),)),
}
LISTING_FULL = 100_000
LISTING_QUICK = 300


def file_name(index: int) -> str:
    """The sandbox's name for listing-only document `index` (see `add_listing_only`)."""
    return f"report-{index:06d}.pdf"


def ensure(root: Path, spec: Spec) -> Path:
    """Write the data set under `root/spec.name` unless an identical one is already there."""
    folder = root / spec.name
    marker = root / f".{spec.name}.complete.json"  # outside the tree the tools copy
    want = json.dumps(asdict(spec))
    if marker.is_file() and marker.read_text() == want:
        return folder
    print(f"generating data set {spec.name} ({spec.total_bytes / MiB:.0f} MiB)")
    folder.mkdir(parents=True, exist_ok=True)
    for index, size in enumerate(spec.sizes):
        _write(folder / file_name(index), index, size)
    marker.write_text(want)
    return folder


def _write(path: Path, index: int, size: int) -> None:
    rng = random.Random(index)
    with path.open("wb") as out:
        left = size
        while left:
            block = min(left, 8 * MiB)
            out.write(rng.randbytes(block))
            left -= block
