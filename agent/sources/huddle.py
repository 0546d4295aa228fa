"""Huddle: folder trees walked through paged views, every folder listed on every pass.

Listing. Each configured root (a workspace's root folder, or a folder URL) is walked depth
first: GET the folder, then its paged `collection` view (`size=250`, following `next`
links as given). Each folder's listing is kept in a state cursor (`FolderCache`) with the
folder's `Last-Modified`; what the cache learnt about each document answers again while
the folder's summary of it shows the same `updated` (and version), and otherwise the
Document resource is asked with `If-Modified-Since` (`huddle_lookup`). A cache is saved
only after its whole subtree was listed, so an interrupted pass never hides a change.
410 Gone (or 404 below a root) means the folder was deleted: its documents are not listed
and its caches are dropped. 423 Locked replays the folder's cached documents and lists its
child folders as usual.

The documentation does not say what a folder's `Last-Modified` covers, so by default the
agent concludes nothing from it: a new document or version below (or inside) a folder
whose time did not move is still found. With `trust_folder_times`, only for servers that
move a folder's time for any change below it, a folder is asked with `If-Modified-Since`
and a 304 (or 423) replays the cached documents of its WHOLE subtree without another
request.

Mirror paths. `folder` is the root's label, then the titles of the folders below it. The
label is the workspace title for a workspace (the root folder itself is always called
"Documents") and the folder's own title for a folder URL; two roots with the same label
get the second's id appended. The label is always present, so adding a second root later
moves nothing.

Documents are named by the id in their `self` link; the change key is the version number
plus `updated` in one canonical date form (ISO-8601 and RFC 1123 compare equal). A folder
may list a document with only its `self` link, so a summary without a `content` link is
completed from the Document resource (`huddle_lookup`, cached per document in the folder's
cache); only a Document resource without `content` (no download permission) lists the
document with a skip reason. With `formats` set, each downloadable document also lists one
rendition per format, fetched with the preview download reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from agent.config import HuddleSettings
from agent.errors import FatalSourceError, SkipDocument, safe_url
from agent.log import get_logger
from agent.models import RemoteDocument
from agent.sources.base import BaseSource, SourceContext
from agent.sources.http import ApiResponse
from agent.sources.huddle_auth import HuddleAuth
from agent.sources.huddle_content import POLL_BUDGET, Converter, Sleep, check_content
from agent.sources.huddle_items import (
    NO_PERMISSION,
    DocEntry,
    FolderCache,
    Summary,
    cache_key,
    folder_page,
    href,
    id_from_href,
    inline_page,
    remote_documents,
    unique_label,
)
from agent.sources.huddle_lookup import DocumentLookup
from agent.sources.vendor import failed_call
from agent.transfer.contract import Answer, DownloadTarget, Outcome, judge

API_JSON = "application/vnd.huddle.data+json"
PAGE_SIZE = 250  # the documented maximum


@dataclass(frozen=True, slots=True)
class Root:
    """A configured starting point: a workspace's root folder or a folder URL."""

    url: str
    root_id: str
    workspace: bool


@dataclass
class _Pass:
    """Bookkeeping of one listing pass."""

    labels: set[str] = field(default_factory=set)
    visited: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Listing:
    folders: tuple[str, ...]
    documents: tuple[DocEntry, ...]


class HuddleSource(BaseSource):
    """Mirrors Huddle workspaces and folders; see the module docstring for the listing."""

    def __init__(
        self,
        ctx: SourceContext,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        conversion_budget: float = POLL_BUDGET,
    ) -> None:
        super().__init__(ctx)
        self.settings = self.settings_of(HuddleSettings)
        self.auth = HuddleAuth(ctx, self.settings, clock=clock)
        self.converter = Converter(ctx.client, self.auth, sleep=sleep, budget=conversion_budget)
        self.lookup = DocumentLookup(
            self._fetch_document, self._json, concurrency=ctx.agent.max_concurrent_downloads
        )
        self.log = get_logger(source=self.name)

    def roots(self) -> list[Root]:
        workspaces = [
            Root(f"{self.base_url}/files/workspaces/{ws}/folders/root", ws, workspace=True)
            for ws in self.settings.workspaces
        ]
        folders = [Root(url, id_from_href(url), workspace=False) for url in self.settings.folders]
        return workspaces + folders

    # -- listing ----------------------------------------------------------------------------

    async def list_documents(self) -> AsyncIterator[RemoteDocument]:
        run = _Pass()
        for root in self.roots():
            async for doc in self._walk(root.url, (), run, root):
                yield doc

    async def _walk(
        self, url: str, parent: tuple[str, ...], run: _Pass, root: Root | None = None
    ) -> AsyncIterator[RemoteDocument]:
        """List one folder and its subtree; a locked (or trusted unchanged) one from cache."""
        run.visited.add(url)
        cached = await self._load(url)
        trusted = self.settings.trust_folder_times
        since = cached.last_modified if cached is not None and trusted else None
        response = await self._get(url, since=since)
        if cached is not None and _replayed(response.status, asked_since=bool(since)):
            if response.status == 423:
                self.log.warning("huddle.folder_locked", url=safe_url(url))
            async for doc in self._replay(cached, parent, run, root):
                yield doc
            return
        if self._gone(response, root):
            await self._forget(url, run)
            return
        body = self._json(response, url)
        title = await self._title(body, root)
        path = self._path(parent, title, root, run)
        listing = await self._list(body, cached)
        if listing is None:  # deleted while we were reading it
            await self._forget(url, run)
            return
        for entry in listing.documents:
            for doc in self._documents(entry, path):
                yield doc
        for child in listing.folders:
            async for doc in self._walk(child, path, run):
                yield doc
        await self._forget_dropped(cached, listing.folders, run)
        last_modified = response.header("Last-Modified")
        fresh = FolderCache(last_modified, title, listing.folders, listing.documents)
        await self.ctx.state.save_cursor(cache_key(url), fresh.encode())

    async def _replay(
        self, cache: FolderCache, parent: tuple[str, ...], run: _Pass, root: Root | None
    ) -> AsyncIterator[RemoteDocument]:
        """Yield a folder's cached documents, then its child folders.

        With `trust_folder_times` the children are replayed from their caches too (the
        folder's time covers them); otherwise, or when a child has no cache, listed live.
        """
        path = self._path(parent, cache.title, root, run)
        for entry in cache.documents:
            for doc in self._documents(entry, path):
                yield doc
        for child in cache.folders:
            child_cache = await self._load(child) if self.settings.trust_folder_times else None
            if child_cache is None:
                async for doc in self._walk(child, path, run):
                    yield doc
                continue
            run.visited.add(child)
            async for doc in self._replay(child_cache, path, run, None):
                yield doc

    async def _list(self, body: Mapping[str, Any], cached: FolderCache | None) -> _Listing | None:
        """Every child of a folder through its paged view (None: the folder went away).

        Document summaries are completed page by page from what `cached` learnt before.
        """
        known = {d.doc_id: d for d in cached.documents} if cached else {}
        collection = href(body, "collection")
        if collection is None:
            page = inline_page(body)
            return _Listing(page.folders, tuple(await self.lookup.complete(page.documents, known)))
        folders: dict[str, None] = {}
        documents: dict[str, DocEntry] = {}
        url: str | None = with_page_size(collection, PAGE_SIZE)
        seen: set[str] = set()
        while url is not None and url not in seen:
            seen.add(url)
            response = await self._get(url)
            if response.status in (404, 410):
                return None
            page = folder_page(self._json(response, url))
            folders.update(dict.fromkeys(page.folders))
            summaries = _unseen(page.documents, documents)
            documents.update((d.doc_id, d) for d in await self.lookup.complete(summaries, known))
            url = page.next_url
        return _Listing(tuple(folders), tuple(documents.values()))

    def _documents(self, entry: DocEntry, path: tuple[str, ...]) -> list[RemoteDocument]:
        reason = self.settings.download_reason
        return list(remote_documents(entry, path, reason, self.settings.formats))

    def _path(
        self, parent: tuple[str, ...], title: str, root: Root | None, run: _Pass
    ) -> tuple[str, ...]:
        if root is None:
            return (*parent, title)
        return (unique_label(title, root.root_id, run.labels),)

    async def _title(self, body: Mapping[str, Any], root: Root | None) -> str:
        """A folder's path component; for a workspace root, the workspace's title."""
        title = str(body.get("title") or "")
        if root is None or not root.workspace:
            return title
        workspace = href(body, "workspace")
        if workspace is not None:
            response = await self._get(workspace)
            if response.status == 200:
                data = response.json()
                if isinstance(data, dict) and data.get("title"):
                    return str(data["title"])
        return root.root_id

    # -- folder caches ----------------------------------------------------------------------

    async def _load(self, url: str) -> FolderCache | None:
        return FolderCache.decode(await self.ctx.state.load_cursor(cache_key(url)))

    async def _forget(self, url: str, run: _Pass) -> None:
        """Drop the caches of a folder and its cached subtree (not those listed this pass)."""
        cached = await self._load(url)
        await self.ctx.state.save_cursor(cache_key(url), None)
        for child in cached.folders if cached else ():
            if child not in run.visited:
                await self._forget(child, run)

    async def _forget_dropped(
        self, cached: FolderCache | None, folders: tuple[str, ...], run: _Pass
    ) -> None:
        if cached is None:
            return
        for child in set(cached.folders) - set(folders):
            if child not in run.visited:
                await self._forget(child, run)

    # -- requests ---------------------------------------------------------------------------

    async def _fetch_document(self, url: str, since: str | None) -> ApiResponse:
        return await self._get(url, since=since)

    async def _get(self, url: str, *, since: str | None = None) -> ApiResponse:
        headers = {"Accept": API_JSON}
        if since:
            headers["If-Modified-Since"] = since
        return await self.client.request("GET", url, auth=self.auth, headers=headers)

    def _gone(self, response: ApiResponse, root: Root | None) -> bool:
        """410 (or 404 below a root): the folder was deleted. A missing root is an error."""
        if response.status == 410 or (response.status == 404 and root is None):
            self.log.info("huddle.folder_gone", url=safe_url(response.url))
            return True
        if response.status == 404:
            raise FatalSourceError(self.name, f"folder not found: {safe_url(response.url)}")
        return False

    def _json(self, response: ApiResponse, url: str) -> Mapping[str, Any]:
        if response.status != 200:
            raise failed_call(self.name, "listing", response.status, url=url)
        body = response.json()
        if not isinstance(body, dict):
            raise FatalSourceError(self.name, f"{safe_url(url)} did not answer a JSON object")
        return body

    # -- downloads --------------------------------------------------------------------------

    async def download_target(
        self, doc: RemoteDocument, attrs: Mapping[str, str]
    ) -> DownloadTarget:
        """The content link; for a rendition, only once its conversion exists.

        The download reason is the job's own (a resumed job keeps the reason it began with).
        """
        if doc.locator is None:
            raise SkipDocument(NO_PERMISSION)
        reason = (
            attrs.get("x-download-reason")
            or doc.attrs.get("x-download-reason")
            or self.settings.download_reason
        )
        headers = {"x-download-reason": reason}
        url = doc.locator
        accept = attrs.get("accept") or doc.attrs.get("accept")
        if accept:
            url = await self.converter.prepare(doc.locator, accept, reason)
            headers["Accept"] = accept
        return DownloadTarget.authorized(url, await self.auth.lease(), headers)

    async def check_download(self, answer: Answer) -> Outcome:
        return judge(check_content, answer.head)


def _replayed(status: int, *, asked_since: bool) -> bool:
    """Whether a folder's answer sends us to its cache: locked, or unchanged since asked."""
    return status == 423 or (asked_since and status == 304)


def _unseen(summaries: tuple[Summary, ...], listed: Mapping[str, DocEntry]) -> list[Summary]:
    """The summaries of documents not listed yet on an earlier page of the same folder."""
    return [s for s in summaries if s.entry.doc_id not in listed]


def with_page_size(url: str, size: int) -> str:
    """`url` asking for `size` items a page (any `size` it had is replaced, nothing else)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "size"]
    query.append(("size", str(size)))
    return urlunsplit(parts._replace(query=urlencode(query)))
