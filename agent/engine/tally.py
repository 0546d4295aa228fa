"""What this replica's workers did for one source: counts, bytes and the latest errors."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

RECENT_ERRORS = 16  # failure descriptions kept per source for the pass summary


@dataclass
class Tally:
    """Totals for one source since the workers started (a pass takes a difference)."""

    downloaded: int = 0
    adopted: int = 0
    failed: int = 0
    skipped: int = 0
    bytes: int = 0
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_ERRORS))  # newest

    def copy(self) -> Tally:
        return Tally(
            self.downloaded,
            self.adopted,
            self.failed,
            self.skipped,
            self.bytes,
            self.errors.copy(),
        )
