"""Huddle document lookups: ask the Document resource what a folder's summary left out.

The Folder and PagedFolder pages document inline documents with only their `self` link;
the `content` link (absent without download permission), the version and the file name
are documented on the Document resource. So a summary without a `content` link is not
proof of anything: `DocumentLookup.complete` turns each summary of a page into a full
`DocEntry`, asking the Document resource only when it must:

- a summary with a `content` link is complete as it is (no request);
- an entry read from the Document resource on an earlier pass answers again while the
  summary shows the same `updated` (and version) (no request);
- otherwise the Document resource is asked, with `If-Modified-Since` its `Last-Modified`
  of last time when there was one, so an unchanged document costs a 304 and no body.

A document that answers 404 or 410 went away since its folder was read and is left out.
At most `concurrency` lookups run at once; each goes through the source's `ApiClient`, so
the source's request budget and retries apply to them like to any other call.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from agent.sources.http import ApiResponse
from agent.sources.huddle_items import DocEntry, Summary, doc_entry, reusable

Fetch = Callable[[str, str | None], Awaitable[ApiResponse]]  # (url, If-Modified-Since)
Read = Callable[[ApiResponse, str], Mapping[str, Any]]  # a 200 body, or raise
GONE = frozenset({404, 410})


class DocumentLookup:
    """Completes document summaries from the Document resource, a bounded few at a time."""

    def __init__(self, fetch: Fetch, read: Read, *, concurrency: int) -> None:
        self._fetch = fetch
        self._read = read
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self.requests = 0  # Document resources asked, for logs and tests

    async def complete(
        self, summaries: Sequence[Summary], known: Mapping[str, DocEntry]
    ) -> list[DocEntry]:
        """The full entry of each summary, in order; documents gone meanwhile are left out."""
        entries = [answered(s, known.get(s.entry.doc_id)) for s in summaries]
        asks = {i: s for i, s in enumerate(summaries) if entries[i] is None}
        if asks:
            async with asyncio.TaskGroup() as group:
                tasks = {
                    i: group.create_task(self._ask(s, known.get(s.entry.doc_id)))
                    for i, s in asks.items()
                }
            for i, task in tasks.items():
                entries[i] = task.result()
        return [entry for entry in entries if entry is not None]

    async def _ask(self, shown: Summary, known: DocEntry | None) -> DocEntry | None:
        """The Document resource's entry, `known` if it answers 304, None if it is gone."""
        since = known.checked if known is not None else None
        async with self._slots:
            self.requests += 1
            response = await self._fetch(shown.url, since or None)
        if response.status == 304 and known is not None:
            return known
        if response.status in GONE:
            return None
        body = self._read(response, shown.url)
        entry = doc_entry(body, shown.url) or shown.entry
        checked = response.header("Last-Modified") or ""
        return dataclasses.replace(entry, doc_id=shown.entry.doc_id, checked=checked)


def answered(shown: Summary, known: DocEntry | None) -> DocEntry | None:
    """The entry for a summary without asking, or None when the Document resource must say."""
    if shown.complete:
        return shown.entry
    if known is not None and reusable(shown.entry, known):
        return known
    return None
