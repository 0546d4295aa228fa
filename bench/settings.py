"""What one benchmark run measures: the data sets of the full and quick modes, and the knobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.data import GiB, KiB, MiB, Spec
from bench.listing import Listing

SOURCE = "bench"  # the agent's source name, so its mirror folder is mirror/bench/
TINY = "tiny"  # the file folder nginx answers with one short body (listings only)


@dataclass(frozen=True)
class Sets:
    """The file sets the tools copy and the listings that only the agent reads."""

    bulk: Spec
    small: Spec
    big: Spec
    resume: Spec
    first: Listing  # time to the first file, from an empty mirror
    repoll: Listing  # a pass over a mirror that already holds every document
    latency: Listing  # the slot for replicas against a slow API (over `small`'s files)

    def files(self) -> tuple[Spec, ...]:
        return (self.bulk, self.small, self.big, self.resume)

    def listings(self) -> tuple[Listing, ...]:
        mirrors = tuple(listing_of(spec) for spec in self.files())
        return (*mirrors, self.first, self.repoll, self.latency)


def listing_of(spec: Spec) -> Listing:
    """The listing whose documents are the files of `spec` (the agent's view of the set)."""
    return Listing(spec.name, spec.count, spec.name)


FULL = Sets(
    bulk=Spec("bulk", ((8, 128 * MiB), (1000, MiB))),
    small=Spec("small", ((20_000, 4 * KiB),)),
    big=Spec("big", ((1, 2 * GiB),)),
    resume=Spec("resume", ((1, GiB),)),
    first=Listing("first", 100_000, TINY),
    repoll=Listing("repoll", 1_000_000, TINY),
    latency=Listing("latency", 2_000, "small"),
)
QUICK = Sets(
    bulk=Spec("bulk-quick", ((2, 2 * MiB), (18, 64 * KiB))),
    small=Spec("small-quick", ((20, 4 * KiB),)),
    big=Spec("big-quick", ((1, 8 * MiB),)),
    resume=Spec("resume-quick", ((1, 16 * MiB),)),
    first=Listing("first-quick", 300, TINY),
    repoll=Listing("repoll-quick", 1_000, TINY),
    latency=Listing("latency-quick", 20, "small-quick"),
)


@dataclass(frozen=True)
class Settings:
    """One run's mode, rounds, concurrency and folders."""

    quick: bool
    rounds: int
    concurrency: int
    data_dir: Path
    work_dir: Path
    log: Path
    only: frozenset[str] | None = None  # the measures to run; None: every one

    def measures(self, key: str) -> bool:
        """Whether this run measures `key` (`--only`)."""
        return self.only is None or key in self.only

    @property
    def sets(self) -> Sets:
        return QUICK if self.quick else FULL

    @property
    def resume_rate(self) -> str:
        """nginx's `limit_rate` for the resume file, so the kill lands mid-transfer."""
        return "8m" if self.quick else "256m"
