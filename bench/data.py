"""Deterministic file sets, generated once under `bench/data/` and reused by every run.

File `i` of a set is `<set>/report-<i, 6 digits>.pdf`: the listing names document `i` the
same (`bench.listing`), so the agent and every peer mirror the same tree from one nginx.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


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

    @property
    def count(self) -> int:
        return sum(count for count, _ in self.groups)


def human_size(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def describe(groups: Sequence[Sequence[int]]) -> str:
    """`8 x 128 MiB + 1,000 x 1 MiB` for `((8, 128 MiB), (1000, 1 MiB))`."""
    return " + ".join(f"{count:,} x {human_size(size)}" for count, size in groups)


def file_name(index: int) -> str:
    """The name of file `index` of a set, and of document `index` of its listing."""
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
