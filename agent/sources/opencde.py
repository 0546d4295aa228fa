"""OpenCDE Documents API 1.0: discovery, rotating-token auth, the selection and change polling.

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

import base64
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from agent.config import OpenCdeSettings
from agent.errors import AuthenticationError, FatalSourceError, PermanentError, TransientError
from agent.log import get_logger
from agent.models import DownloadTarget, RemoteDocument
from agent.sources.auth import Token, TokenAuth, parse_expires_in
from agent.sources.base import BaseSource, SourceContext
from agent.sources.http import ApiClient, ApiResponse
from agent.state.source_state import SourceState

DISCOVERY = "discovery"
SELECTION = "selection"
VERSIONS = "versions"
HISTORY = "history"
REFRESH_SEED = "refresh_seed"
DOCUMENTS_API = ("documents", "1.0")


# ---------------------------------------------------------------- discovery


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the Documents API and the OAuth endpoints of one CDE live."""

    base_url: str
    api: str
    auth_url: str
    token_url: str


async def discover(ctx: SourceContext, *, fresh: bool = False) -> Endpoints:
    """The CDE's endpoints from the Foundation API, cached in the `discovery` cursor."""
    base = ctx.config.base_url
    if not fresh:
        cached = _load_json(await ctx.state.load_cursor(DISCOVERY))
        if isinstance(cached, dict) and cached.get("base_url") == base:
            try:
                return Endpoints(**cached)
            except TypeError:
                pass  # an older shape: discover again
    versions = await _get_json(ctx, f"{base}/foundation/versions")
    auth = await _get_json(ctx, f"{base}/foundation/1.0/auth")
    endpoints = Endpoints(
        base_url=base,
        api=_documents_api(ctx.config.name, versions),
        auth_url=_string_field(ctx.config.name, auth, "oauth2_auth_url"),
        token_url=_string_field(ctx.config.name, auth, "oauth2_token_url"),
    )
    await ctx.state.save_cursor(DISCOVERY, json.dumps(asdict(endpoints)))
    return endpoints


async def _get_json(ctx: SourceContext, url: str) -> Any:
    response = await ctx.client.request("GET", url, headers={"Accept": "application/json"})
    if response.status != 200:
        raise FatalSourceError(
            ctx.config.name, f"discovery failed: {url} answered HTTP {response.status}"
        )
    return response.json()


def _documents_api(source: str, body: object) -> str:
    """`api_base_url` of the Documents API 1.0 (any 1.x when 1.0 itself is not listed)."""
    entries = body.get("versions") if isinstance(body, dict) else None
    candidates = [
        e
        for e in entries or ()
        if isinstance(e, dict)
        and e.get("api_id") == DOCUMENTS_API[0]
        and isinstance(e.get("api_base_url"), str)
        and str(e.get("version_id", "")).startswith("1.")
    ]
    candidates.sort(key=lambda e: e.get("version_id") != DOCUMENTS_API[1])
    if not candidates:
        raise FatalSourceError(source, "the CDE does not offer the OpenCDE Documents API 1.0")
    return str(candidates[0]["api_base_url"]).rstrip("/")


def _string_field(source: str, body: object, key: str) -> str:
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise FatalSourceError(source, f"the CDE's auth discovery has no {key}")
    return value


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class Grant:
    """A token endpoint's answer."""

    access: str
    expires_in: float
    refresh: str | None


def login_hint(source: str) -> str:
    return f"run `sync-agent login {source}`"


async def request_grant(
    ctx: SourceContext, token_url: str, form: Mapping[str, str], *, what: str
) -> Grant:
    """POST a grant to the token endpoint, once (codes and refresh tokens are single-use).

    The client authenticates with HTTP Basic; a public client (no secret) sends its id in
    the form. 200 and 201 both mean success; `expires_in` may be a number or a string.
    """
    name = ctx.config.name
    headers = {"Accept": "application/json", "Cache-Control": "no-cache"}
    body = dict(form)
    secret = ctx.config.client_secret
    if secret is not None:
        pair = f"{ctx.config.client_id}:{secret.reveal()}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    else:
        body["client_id"] = ctx.config.client_id or ""
    response = await _single_attempt(ctx.client).request(
        "POST", token_url, headers=headers, data=body
    )
    if response.status in (400, 401, 403):
        problem = _oauth_error(response)
        raise AuthenticationError(name, f"{what} was refused ({problem}): {login_hint(name)}")
    if response.status not in (200, 201):
        raise TransientError("token request failed", url=token_url, status=response.status)
    return _grant(response, token_url)


def _single_attempt(client: ApiClient) -> ApiClient:
    """The same session and budget, but no automatic retry: a lost answer may have spent
    the code or refresh token already, and sending it again would be refused anyway."""
    return ApiClient(
        client.session, client.limiter, source=client.source, max_attempts=1, sleep=client.sleep
    )


def _oauth_error(response: ApiResponse) -> str:
    try:
        body = json.loads(response.body)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) and error else f"HTTP {response.status}"


def _grant(response: ApiResponse, token_url: str) -> Grant:
    body = response.json()
    access = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(access, str) or not access:
        raise TransientError("token response without access_token", url=token_url)
    refresh = body.get("refresh_token")
    return Grant(
        access=access,
        expires_in=parse_expires_in(body.get("expires_in")),
        refresh=refresh if isinstance(refresh, str) and refresh else None,
    )


def seed_digest(ctx: SourceContext) -> str | None:
    """A hash of the configured refresh token (never the token itself), or None."""
    settings = ctx.config.settings
    assert isinstance(settings, OpenCdeSettings)
    if settings.refresh_token is None:
        return None
    return hashlib.sha256(settings.refresh_token.reveal().encode()).hexdigest()


async def mark_seed_spent(ctx: SourceContext) -> None:
    """From now on the stored refresh token wins over the configured one (until it changes)."""
    digest = seed_digest(ctx)
    if digest is not None:
        await ctx.state.save_cursor(REFRESH_SEED, digest)


class RefreshTokenAuth(TokenAuth):
    """Bearer tokens from a rotating, single-use refresh token.

    The token to spend is the configured seed until it has been spent once (or a login has
    happened), then the one in the state database. Each new refresh token is saved before
    the access token that came with it is used; TokenAuth's lock keeps renewals single-flight.
    """

    def __init__(
        self, ctx: SourceContext, token_url: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(ctx.state, clock=clock)
        self.ctx = ctx
        self.token_url = token_url

    async def obtain(self) -> Token:
        refresh, from_seed = await self._refresh_token()
        form = {"grant_type": "refresh_token", "refresh_token": refresh}
        try:
            grant = await request_grant(self.ctx, self.token_url, form, what="the refresh token")
        except AuthenticationError:
            if from_seed:
                await mark_seed_spent(self.ctx)
            raise
        if grant.refresh is not None:
            await self.state.save_token("refresh", grant.refresh)
        if from_seed:
            await mark_seed_spent(self.ctx)
        return Token(grant.access, self.clock() + grant.expires_in)

    async def store(self, grant: Grant) -> None:
        """Keep an access token obtained elsewhere (the sign-in's code exchange)."""
        self.token = Token(grant.access, self.clock() + grant.expires_in)
        expires = datetime.fromtimestamp(self.token.expires_at, UTC)
        await self.state.save_token("access", grant.access, expires)

    async def _refresh_token(self) -> tuple[str, bool]:
        settings = self.ctx.config.settings
        assert isinstance(settings, OpenCdeSettings)
        digest = seed_digest(self.ctx)
        if settings.refresh_token is not None and digest != await self.state.load_cursor(
            REFRESH_SEED
        ):
            return settings.refresh_token.reveal(), True
        stored = await self.state.load_token("refresh")
        if stored is not None and stored.value:
            return stored.value, False
        name = self.ctx.config.name
        raise AuthenticationError(name, f"not signed in: {login_hint(name)}")


def check_api_status(source: str, response: ApiResponse, what: str) -> None:
    """Turn a failed API answer into the matching error (401 after a refresh: signed out)."""
    if response.status == 401:
        raise AuthenticationError(
            source, f"{what}: the CDE refused our token; {login_hint(source)}"
        )
    if response.status == 403:
        raise FatalSourceError(source, f"{what}: not authorised (HTTP 403)")
    raise FatalSourceError(source, f"{what} failed with HTTP {response.status}")


# ---------------------------------------------------------------- the selection


@dataclass(frozen=True, slots=True)
class SelectedDocument:
    """One document the user picked in the CDE (title and name as they were then)."""

    document_id: str
    title: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class Selection:
    """The set of selected documents, in the order they were first picked."""

    documents: tuple[SelectedDocument, ...] = ()
    server_context: str | None = None

    def ids(self) -> list[str]:
        return [d.document_id for d in self.documents]

    def merged(
        self, picked: Iterable[SelectedDocument], server_context: str | None
    ) -> tuple[Selection, list[str]]:
        """The selection with `picked` added (known ones refreshed), and the ids that are new."""
        by_id = {d.document_id: d for d in self.documents}
        added = [d.document_id for d in picked if d.document_id not in by_id]
        by_id.update({d.document_id: d for d in picked})
        context = server_context if server_context is not None else self.server_context
        return Selection(tuple(by_id.values()), context), list(dict.fromkeys(added))

    def without(self, document_id: str) -> Selection:
        kept = tuple(d for d in self.documents if d.document_id != document_id)
        return replace(self, documents=kept)


async def load_selection(state: SourceState, source: str = "") -> Selection:
    raw = await state.load_cursor(SELECTION)
    if raw is None:
        return Selection()
    data = _load_json(raw)
    try:
        assert isinstance(data, dict)
        docs = tuple(SelectedDocument(**d) for d in data.get("documents") or ())
        context = data.get("server_context")
        return Selection(docs, context if isinstance(context, str) else None)
    except (AssertionError, TypeError) as exc:
        message = f"the stored selection is unreadable: run `sync-agent select {source}`"
        raise FatalSourceError(source, message) from exc


async def save_selection(state: SourceState, selection: Selection) -> None:
    data = {
        "server_context": selection.server_context,
        "documents": [asdict(d) for d in selection.documents],
    }
    await state.save_cursor(SELECTION, json.dumps(data, separators=(",", ":")))


# ---------------------------------------------------------------- DocumentVersion


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """The parts of a DocumentVersion the agent uses; also the cached (cursor) shape."""

    document_id: str
    index: int
    number: str = ""
    title: str = ""
    name: str = ""
    size: int | None = None
    created: str = ""
    download: str | None = None
    all_versions: str | None = None
    details: str | None = None


def parse_version(item: object) -> VersionInfo | None:
    """A DocumentVersion, or None when it lacks a document_id or an integer version_index."""
    if not isinstance(item, dict):
        return None
    document_id, index = item.get("document_id"), item.get("version_index")
    if not isinstance(document_id, str) or not document_id:
        return None
    if not isinstance(index, int) or isinstance(index, bool):
        return None
    described = item.get("file_description")
    described = described if isinstance(described, dict) else {}
    links = item.get("links")
    links = links if isinstance(links, dict) else {}
    title = _text(item.get("title"))
    return VersionInfo(
        document_id=document_id,
        index=index,
        number=_text(item.get("version_number")),
        title=title,
        name=_text(described.get("name")) or title or document_id,
        size=_size(described.get("size_in_bytes")),
        created=_text(item.get("creation_date")),
        download=_link(links, "document_version_download"),
        all_versions=_link(links, "document_versions"),
        details=_link(links, "document_details"),
    )


def latest_per_document(versions: Iterable[VersionInfo]) -> dict[str, VersionInfo]:
    """The highest version_index of each document, whatever the order they came in."""
    latest: dict[str, VersionInfo] = {}
    for version in versions:
        known = latest.get(version.document_id)
        if known is None or version.index > known.index:
            latest[version.document_id] = version
    return latest


def previous_versions(
    versions: Iterable[VersionInfo], latest: VersionInfo, keep: int
) -> list[VersionInfo]:
    """The `keep - 1` newest versions of `latest`'s document older than it, newest first."""
    older = {
        v.index: v
        for v in versions
        if v.document_id == latest.document_id and v.index < latest.index
    }
    return [older[i] for i in sorted(older, reverse=True)][: max(0, keep - 1)]


def versioned_name(name: str, number: str) -> str:
    """`plan.pdf` + `v3.0` -> `plan (v3.0).pdf`: the extension stays last."""
    label = number.replace("/", "-").replace("\\", "-").strip()
    stem, ext = os.path.splitext(name)
    return f"{stem} ({label}){ext}"


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _size(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and value >= 0 else None


def _link(links: Mapping[str, object], key: str) -> str | None:
    link = links.get(key)
    url = link.get("url") if isinstance(link, dict) else link
    return url if isinstance(url, str) and url else None


def _version_from_json(data: object) -> VersionInfo | None:
    try:
        return VersionInfo(**data) if isinstance(data, dict) else None
    except TypeError:
        return None


def _load_json(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _parse_date(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# ---------------------------------------------------------------- polling caches


@dataclass
class PollCache:
    """The last `document-versions` answer: the ids asked for, its ETag, the latest versions."""

    ids: list[str]
    etag: str | None
    latest: dict[str, VersionInfo]

    def to_json(self) -> str:
        latest = [asdict(v) for v in self.latest.values()]
        return json.dumps({"ids": self.ids, "etag": self.etag, "latest": latest})

    @classmethod
    def from_json(cls, raw: str | None) -> PollCache | None:
        data = _load_json(raw)
        if not isinstance(data, dict) or not isinstance(data.get("ids"), list):
            return None
        parsed = [_version_from_json(v) for v in data.get("latest") or ()]
        if any(v is None for v in parsed):
            return None
        etag = data.get("etag")
        latest = {v.document_id: v for v in parsed if v is not None}
        return cls(list(data["ids"]), etag if isinstance(etag, str) else None, latest)


@dataclass
class HistoryCache:
    """Previous versions per document, valid while the latest index and `keep` are unchanged."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: bool = False

    def get(self, latest: VersionInfo, keep: int) -> list[VersionInfo] | None:
        entry = self.entries.get(latest.document_id)
        if not entry or entry.get("latest") != latest.index or entry.get("keep") != keep:
            return None
        parsed = [_version_from_json(v) for v in entry.get("previous") or ()]
        return None if any(v is None for v in parsed) else [v for v in parsed if v is not None]

    def put(self, latest: VersionInfo, keep: int, previous: list[VersionInfo]) -> None:
        saved = {"latest": latest.index, "keep": keep, "previous": [asdict(v) for v in previous]}
        self.entries[latest.document_id] = saved
        self.changed = True

    def prune(self, document_ids: Iterable[str]) -> None:
        wanted = set(document_ids)
        for stale in [d for d in self.entries if d not in wanted]:
            del self.entries[stale]
            self.changed = True

    @classmethod
    def from_json(cls, raw: str | None) -> HistoryCache:
        data = _load_json(raw)
        return (
            cls({k: v for k, v in data.items() if isinstance(v, dict)})
            if isinstance(data, dict)
            else cls()
        )


# ---------------------------------------------------------------- the source


class OpenCdeSource(BaseSource):
    """Polls the selected documents' versions and downloads them with the bearer token."""

    def __init__(self, ctx: SourceContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx)
        settings = ctx.config.settings
        assert isinstance(settings, OpenCdeSettings)
        self.keep = settings.keep_versions
        self.clock = clock
        self.log = get_logger(source=self.name)
        self._endpoints: Endpoints | None = None
        self._auth: RefreshTokenAuth | None = None

    async def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            self._endpoints = await discover(self.ctx)
        return self._endpoints

    async def auth(self) -> RefreshTokenAuth:
        if self._auth is None:
            token_url = (await self.endpoints()).token_url
            self._auth = RefreshTokenAuth(self.ctx, token_url, clock=self.clock)
        return self._auth

    async def list_documents(self) -> AsyncIterator[RemoteDocument]:
        selection = await load_selection(self.ctx.state, self.name)
        if not selection.documents:
            self.log.warning("opencde.nothing_selected", hint=f"sync-agent select {self.name}")
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
            auth=await self.auth(),
            headers=headers,
            json_body={"document_ids": ids},
        )
        if response.status == 304 and cache is not None:
            self.log.debug("opencde.unchanged", documents=len(cache.latest))
            return cache.latest
        if response.status == 404:  # the API moved? look it up again next pass
            await self.ctx.state.save_cursor(DISCOVERY, None)
            self._endpoints = self._auth = None
        if response.status != 200:
            check_api_status(self.name, response, "polling document-versions")
        body = response.json()
        items = body.get("versions") if isinstance(body, dict) else None
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
            "GET", url, auth=await self.auth(), headers={"Accept": "application/json"}
        )
        if response.status in (403, 404, 410):
            self.log.info("opencde.versions_unavailable", document_id=latest.document_id)
            return []
        if response.status != 200:
            check_api_status(self.name, response, "listing a document's versions")
        body = response.json()
        items = body.get("documents") if isinstance(body, dict) else None
        parsed = (parse_version(item) for item in items or ())
        return previous_versions((v for v in parsed if v is not None), latest, self.keep)

    async def download_target(
        self, doc: RemoteDocument, attrs: Mapping[str, str]
    ) -> DownloadTarget:
        url = doc.locator or attrs.get("download_url")
        if not url:
            raise PermanentError("the CDE gave no download link for this version")
        auth = await self.auth()
        return DownloadTarget(url, {"Authorization": await auth.authorization()})

    async def on_unauthorized(self, rejected: str) -> None:
        await (await self.auth()).refresh(rejected)


def to_remote(version: VersionInfo, *, older: bool = False) -> RemoteDocument:
    """The agent's view of a version: the latest under its own name, older ones suffixed."""
    remote_id = f"{version.document_id}@{version.index}" if older else version.document_id
    name = version.name
    if older:
        name = versioned_name(name, version.number or f"v{version.index}")
    metadata = {
        "document_id": version.document_id,
        "title": version.title,
        "version_number": version.number,
        "version_index": version.index,
        "creation_date": version.created,
        "details_url": version.details,
    }
    return RemoteDocument(
        remote_id=remote_id,
        version=str(version.index),
        name=name,
        size=version.size,
        modified=_parse_date(version.created),
        locator=version.download,
        attrs={"download_url": version.download} if version.download else {},
        skip_reason=None if version.download else "no download link",
        metadata=metadata,
        prune_when_removed=older,  # versions beyond keep_versions leave the mirror
    )
