"""Index Health sandbox demo data: two collections of deterministic, varied documents."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Final

from agent.sandbox.index_health_http import EXTENSION_BY_TYPE, slug

if TYPE_CHECKING:
    from agent.sandbox.index_health import IndexHealthSandbox

DOCUMENT_KINDS: Final = ("PDF", "DOCX", "TXT", "IMG")
_DEMO_ADJECTIVES: Final = ("Quarterly", "Annual", "Clinical", "Patient", "Staff", "Pharmacy")
_DEMO_NOUNS: Final = ("report", "guideline", "checklist", "protocol", "summary", "handbook")
_DEMO_TAGS: Final = ["important", "reference", "draft", "audit", "training", "policy"]


def _demo_bytes(rng: random.Random, kind: str, topic: str) -> bytes:
    headers = {
        "PDF": b"%PDF-1.4\n",
        "DOCX": b"PK\x03\x04",
        "IMG": b"\x89PNG\r\n\x1a\n",
    }
    body = f"{topic}\n".encode() * rng.randint(4, 60)
    if kind == "TXT":
        return body
    return headers[kind] + body + rng.randbytes(rng.randint(16, 512))


def populate_demo(sandbox: IndexHealthSandbox, n: int, seed: int, now: float) -> list[str]:
    """Add two collections and ``n`` deterministic documents; return their ids.

    About one in seven is URL-based, one in five has a name without extension, and
    timestamps lie in the past month. Content is small (under 4 KiB each).
    """
    rng = random.Random(seed)
    collections = [
        sandbox.add_collection("Clinical Guidelines"),
        sandbox.add_collection("Operations"),
    ]
    base = now - 30 * 86400.0
    step = min(3600.0, 15 * 86400.0 / max(n, 1))  # all created in the first half-month
    return [
        _demo_document(sandbox, rng, index, collections[index % 2], base + index * step)
        for index in range(n)
    ]


def _demo_document(
    sandbox: IndexHealthSandbox,
    rng: random.Random,
    index: int,
    collection_id: str,
    created_at: float,
) -> str:
    kind = DOCUMENT_KINDS[index % 4]
    topic = f"{rng.choice(_DEMO_ADJECTIVES)} {rng.choice(_DEMO_NOUNS)} {index:03d}"
    extension = EXTENSION_BY_TYPE[kind]
    tags = rng.sample(_DEMO_TAGS, k=rng.randint(0, 3))
    if index % 7 == 6:
        doc_id = sandbox.add_document(
            collection_id,
            topic,
            None,
            url=f"https://example.org/guides/{slug(topic)}",
            description=f"External page about {topic.lower()}",
            doc_type="OTHER",
            tags=tags,
        )
    else:
        name = topic if index % 5 == 4 else topic + extension
        data = _demo_bytes(rng, kind, topic)
        doc_id = sandbox.add_document(
            collection_id,
            name,
            data,
            file_path=f"docs/{index:03d}-{slug(topic)}{extension}",
            doc_type=kind,
            priority=rng.choice(("low", "normal", "high")),
            tags=tags,
        )
    sandbox.backdate(doc_id, created_at, created_at + rng.randint(0, 14) * 86400.0)
    sandbox.set_progress(doc_id, rng.randint(0, 100))
    return doc_id
