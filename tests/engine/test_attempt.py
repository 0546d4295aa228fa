"""Attempts at jobs: the listing's adoption hints stay bounded, whatever the mirror's size."""

from __future__ import annotations

from agent.engine.attempt import Attempts
from agent.engine.plan import Download
from agent.models import RemoteDocument


def downloads(first: int, last: int) -> list[Download]:
    return [
        Download(RemoteDocument(remote_id=f"d{i}", version="1", name=f"{i}.pdf"), f"s/{i}.pdf")
        for i in range(first, last)
    ]


def hinted(attempts: Attempts) -> set[str]:
    return {rid for rid, _, _ in attempts.hints.get("s", set())}


def test_adoption_hints_past_the_bound_are_not_kept() -> None:
    """A recovery that lists far ahead of its workers keeps at most `max_hints` hints per
    source (the files past it are downloaded and adopted at commit); a new pass starts
    with room again."""
    attempts = Attempts(None, None, None, None, None, max_hints=3)  # type: ignore[arg-type]

    attempts.adoptable("s", downloads(0, 2))
    attempts.adoptable("s", downloads(2, 10))
    assert hinted(attempts) == {"d0", "d1", "d2"}

    attempts.forget_hints("s")
    attempts.adoptable("s", downloads(10, 12))
    assert hinted(attempts) == {"d10", "d11"}
