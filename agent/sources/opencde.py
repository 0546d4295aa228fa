"""OpenCDE Documents API 1.0: the selected documents' versions, polled with change caching.

The user picks documents in the CDE's web UI (`opencde_flows.select`); the ids are kept in a
state cursor and read again on every pass, so a running daemon follows the selection without
a restart. A pass asks `POST document-versions` for the selected ids with `If-None-Match`; a
304 re-yields the cached result at the cost of one request. With `keep_versions = N > 1` the
N - 1 previous versions are yielded too, as `name (v3.0).ext` siblings of the latest.

State cursors (JSON): `discovery` (API and OAuth endpoints), `selection` (ids, titles,
server_context), `versions` (last ETag and result), `history` (previous versions per
document), `refresh_seed` (hash of the configured refresh token once it has been spent).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping

from agent.config import OpenCdeSettings
from agent.errors import PermanentError
from agent.log import get_logger
from agent.models import RemoteDocument
from agent.sources.base import BaseSource, SourceContext
from agent.sources.opencde_auth import (
    DISCOVERY,
    REFRESH_SEED,
    Endpoints,
    RefreshTokenAuth,
    discover,
    login_hint,
)
from agent.sources.opencde_model import (
    HistoryCache,
    PollCache,
    VersionInfo,
    latest_per_document,
    load_selection,
    parse_version,
    previous_versions,
    to_remote,
)
from agent.sources.vendor import failed_call, json_object
from agent.transfer.contract import DownloadTarget

VERSIONS = "versions"
SELECT = "sync-agent select"  # the command that picks the documents to mirror
HISTORY = "history"


class OpenCdeSource(BaseSource):
    """Polls the selected documents' versions and downloads them with the bearer token."""

    credential_cursors = frozenset({REFRESH_SEED})  # says whether the configured token is spent

    def __init__(self, ctx: SourceContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx)
        self.keep = self.settings_of(OpenCdeSettings).keep_versions
        self.log = get_logger(source=self.name)
        self._endpoints: Endpoints | None = None
        self.auth = RefreshTokenAuth(ctx, self._token_url, clock=clock)

    async def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            self._endpoints = await discover(self.ctx)
        return self._endpoints

    async def _token_url(self) -> str:
        return (await self.endpoints()).token_url

    async def list_documents(self) -> AsyncIterator[RemoteDocument]:
        selection = await load_selection(self.ctx.state, self.name)
        self.notices = []
        if not selection.documents:
            self.log.warning("opencde.nothing_selected", hint=f"{SELECT} {self.name}")
            self.notices = [
                f"nothing selected to mirror: pick documents with `{SELECT} {self.name}`"
            ]
            return
        latest = await self._poll(selection.ids())
        history = None
        if self.keep > 1:
            history = HistoryCache.from_json(await self.ctx.state.load_cursor(HISTORY))
        for document_id in selection.ids():
            version = latest.get(document_id)
            if version is None:
                continue  # deleted in the CDE or no longer visible to us
            yield to_remote(version)
            for older in await self._previous(version, history) if history is not None else ():
                yield to_remote(older, older=True)
        if history is not None:
            history.prune(latest)
            if history.changed:
                await self.ctx.state.save_cursor(HISTORY, json.dumps(history.entries))

    async def _poll(self, ids: list[str]) -> dict[str, VersionInfo]:
        """The latest version of each selected document; one request, a 304 when unchanged."""
        cache = PollCache.from_json(await self.ctx.state.load_cursor(VERSIONS))
        if cache is not None and (cache.ids != ids or cache.etag is None):
            cache = None  # a different question: its answer cannot be reused
        headers = {"Accept": "application/json"}
        if cache is not None and cache.etag is not None:
            headers["If-None-Match"] = cache.etag
        api = (await self.endpoints()).api
        response = await self.client.request(
            "POST",
            f"{api}/document-versions",
            auth=self.auth,
            headers=headers,
            json_body={"document_ids": ids},
        )
        if response.status == 304 and cache is not None:
            self.log.debug("opencde.unchanged", documents=len(cache.latest))
            return cache.latest
        if response.status == 404:  # the API moved? look it up again next pass
            await self.ctx.state.save_cursor(DISCOVERY, None)
            self._endpoints = None
        if response.status != 200:
            raise self._failed("polling document-versions", response.status)
        items = json_object(response.json()).get("versions")
        parsed = (parse_version(item) for item in items or ())
        latest = latest_per_document(v for v in parsed if v is not None and v.document_id in ids)
        fresh = PollCache(ids, response.header("ETag"), latest)
        await self.ctx.state.save_cursor(VERSIONS, fresh.to_json())
        return latest

    async def _previous(self, latest: VersionInfo, history: HistoryCache) -> list[VersionInfo]:
        """The previous versions to keep beside `latest`; fetched only when `latest` changed."""
        cached = history.get(latest, self.keep)
        if cached is not None:
            return cached
        previous: list[VersionInfo] = []
        if latest.all_versions is not None:
            previous = await self._fetch_previous(latest, latest.all_versions)
        history.put(latest, self.keep, previous)
        return previous

    async def _fetch_previous(self, latest: VersionInfo, url: str) -> list[VersionInfo]:
        response = await self.client.request(
            "GET", url, auth=self.auth, headers={"Accept": "application/json"}
        )
        if response.status in (403, 404, 410):
            self.log.info("opencde.versions_unavailable", document_id=latest.document_id)
            return []
        if response.status != 200:
            raise self._failed("listing a document's versions", response.status)
        items = json_object(response.json()).get("documents")
        parsed = (parse_version(item) for item in items or ())
        return previous_versions((v for v in parsed if v is not None), latest, self.keep)

    def _failed(self, what: str, status: int) -> Exception:
        return failed_call(self.name, what, status, hint=login_hint(self.name))

    async def download_target(
        self, doc: RemoteDocument, attrs: Mapping[str, str]
    ) -> DownloadTarget:
        url = doc.locator or attrs.get("download_url")
        if not url:
            raise PermanentError("the CDE gave no download link for this version")
        return DownloadTarget.authorized(url, await self.auth.lease())
