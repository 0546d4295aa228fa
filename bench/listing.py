"""The Standard-Metrics-shaped API as static files: DRF listing pages, generated once per set.

nginx serves these pages (see `bench.nginx`), so the API side of a benchmark costs no
Python CPU. A page is `{"count","next","previous","results":[...]}` with 100 documents (the
documented maximum page size, which the agent asks for). `next` and `previous` are absolute
URLs whose origin is the placeholder `ORIGIN`; nginx substitutes the origin the request came
to, so the pages do not depend on the port nginx happens to get.

Document `i` of a listing over the file folder `f` has the id `f.<i, 6 digits>` and the name
of file `i` (`bench.data.file_name`); nginx answers `/v1/documents/<id>/download/` with a
302 to `/<f>/<name>`, the same path the peers fetch.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.data import file_name

PAGE_SIZE = 100
ORIGIN = "@ORIGIN@"  # replaced by nginx's sub_filter with http://<host:port> of the request
EPOCH = datetime(2023, 1, 1, tzinfo=UTC)
COMPANY = "bench-co"


@dataclass(frozen=True)
class Listing:
    """One API set: `count` documents whose downloads redirect into the file folder `folder`."""

    name: str
    count: int
    folder: str

    def path(self) -> str:
        """The API root under nginx (`base_url` of the agent's source is origin + this)."""
        return f"/api/{self.name}/v1"


def doc_id(folder: str, index: int) -> str:
    return f"{folder}.{index:06d}"


def uploaded_at(index: int) -> str:
    """Document `index`'s `uploaded_at`: what the agent takes as its version."""
    return (EPOCH + timedelta(seconds=index)).strftime("%Y-%m-%dT%H:%M:%SZ")


def document(listing: Listing, index: int) -> dict[str, Any]:
    """Document `index` as the listing serialises it (the fields of API-NOTES section 4)."""
    when = uploaded_at(index)
    return {
        "id": doc_id(listing.folder, index),
        "name": file_name(index),
        "link": None,
        "company_id": COMPANY,
        "information_request_id": None,
        "parse_state": "parsed",
        "parsed_at": when,
        "uploaded_at": when,
        "source": "upload",
        "submitted_date": when[:10],
    }


def ensure_pages(root: Path, listing: Listing) -> Path:
    """Write the set's pages under `root/api/<name>/page-<n>.json` unless they are there."""
    folder = root / "api" / listing.name
    marker = root / "api" / f".{listing.name}.complete.json"
    want = json.dumps({**asdict(listing), "page_size": PAGE_SIZE, "format": 1})
    if marker.is_file() and marker.read_text() == want:
        return folder
    print(f"generating listing {listing.name} ({listing.count:,} documents)")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pages = max(1, -(-listing.count // PAGE_SIZE))
    for page in range(1, pages + 1):
        body = _page(listing, page, pages)
        (folder / f"page-{page}.json").write_text(json.dumps(body, separators=(",", ":")))
    marker.write_text(want)
    return folder


def _page(listing: Listing, page: int, pages: int) -> dict[str, Any]:
    first = (page - 1) * PAGE_SIZE
    url = f"{ORIGIN}{listing.path()}/documents/?page_size={PAGE_SIZE}&page="
    return {
        "count": listing.count,
        "next": f"{url}{page + 1}" if page < pages else None,
        "previous": f"{url}{page - 1}" if page > 1 else None,
        "results": [
            document(listing, i) for i in range(first, min(first + PAGE_SIZE, listing.count))
        ],
    }
