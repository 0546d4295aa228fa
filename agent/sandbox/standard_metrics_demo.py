"""Standard Metrics sandbox demo data: varied sizes, awkward and duplicate file names."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.sandbox.standard_metrics import StandardMetricsSandbox

PARSE_STATES = ("parsed", "unparsed", "parsing", "failed")  # invented: the docs list none
SOURCES = ("upload", "email", "integration", "api")  # invented: the docs list none
_DEMO_EPOCH = datetime(2024, 1, 8, 9, 0, tzinfo=UTC)

# Names a mirror must sanitise: spaces, unicode, traversal, separators, reserved and odd names.
_AWKWARD_NAMES = (
    "Q4 2023 Board Deck.pdf",
    "Q4 2023 Board Deck.pdf",
    "Résumé \u2013 Ünïcødé 季度报告.pdf",  # an en dash, accents and CJK
    "../evil.pdf",
    "reports/2024/summary.pdf",
    "Financials: FY23 v2?.xlsx",
    "CON.txt",
    "trailing dot and space. ",
    ".hidden",
    "..",
    "README",
    "Investor update " + "very " * 50 + "long name.docx",
)


def populate_demo(sandbox: StandardMetricsSandbox, n: int, seed: int) -> list[str]:
    """Add `n` deterministic documents of varied sizes, with awkward and duplicate names."""
    rng = random.Random(seed)
    companies = ("demo-co", "acme-ventures", "globex")
    ids: list[str] = []
    when = _DEMO_EPOCH
    for i in range(n):
        name = _AWKWARD_NAMES[i] if i < len(_AWKWARD_NAMES) else _plain_name(i, rng)
        when += timedelta(hours=rng.randint(1, 30), seconds=rng.randint(0, 59))
        doc_id = sandbox.add_document(
            name,
            _demo_bytes(name, _demo_size(i, rng), rng),
            company_id=companies[i % len(companies)],
            uploaded_at=when,
            parse_state=rng.choice(PARSE_STATES[:2]) if i % 5 else "parsed",
            source=rng.choice(SOURCES),
            link=f"https://docs.example.com/d/{i}" if i % 7 == 3 else None,
        )
        ids.append(doc_id)
    return ids


def _plain_name(i: int, rng: random.Random) -> str:
    kind = rng.choice(("Portfolio update", "Quarterly report", "Cap table", "Board minutes"))
    extension = rng.choice((".pdf", ".pdf", ".xlsx", ".docx", ".csv"))
    return f"{kind} {i:02d}{extension}"


def _demo_size(i: int, rng: random.Random) -> int:
    """Log-uniform from a few bytes to ~300 KiB, with both extremes always present."""
    if i == 0:
        return 300 * 1024
    if i == 1:
        return 5
    return int(math.exp(rng.uniform(math.log(5), math.log(300 * 1024))))


def _demo_bytes(name: str, size: int, rng: random.Random) -> bytes:
    header = b"%PDF-1.7\n" if name.lower().endswith(".pdf") else name.encode()[:16] + b"\n"
    return (header + rng.randbytes(size))[:size]
