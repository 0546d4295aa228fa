"""Standard Metrics: client-credentials token, paginated listing, download via signed redirect."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from agent.config import StandardMetricsSettings
from agent.errors import TransientError
from agent.models import EMPTY, RemoteDocument
from agent.sources.auth import Grant, TokenAuth, post_grant
from agent.sources.base import BaseSource, SourceContext
from agent.sources.http import ApiResponse
from agent.sources.vendor import failed_call, parse_date
from agent.transfer.contract import DownloadTarget

PAGE_SIZE = "100"  # the documented maximum
REFUSED = frozenset({401, 403})  # how the API refuses a token (DRF: either)
DOWNLOAD_RENEW = frozenset({401})  # a download's 403 may be that document's permission


class _Item(msgspec.Struct, gc=False):
    """A listed document: the fields the agent reads (the others are not decoded). Plain
    values only: msgspec leaves such a struct untracked by the garbage collector anyway;
    `gc=False` says it must stay so."""

    id: str | int | None = None
    name: str | None = None
    uploaded_at: str | None = None


class _Page(msgspec.Struct):
    """A listing page as documented; a page of another shape takes the general path."""

    results: list[_Item] | None = None
    next: str | None = None


PAGE = msgspec.json.Decoder(_Page)


class ClientCredentialsAuth(TokenAuth):
    """OAuth2 client-credentials grant with HTTP Basic client authentication.

    The status of a dead token is not documented: Django REST framework answers 401 or
    403 depending on its first authentication class, so the API calls renew on either.
    """

    renew_statuses = REFUSED

    def __init__(self, ctx: SourceContext, token_url: str) -> None:
        super().__init__(ctx.state, source=ctx.config.name)
        secret = ctx.config.client_secret
        assert secret is not None  # enforced by config
        assert ctx.config.client_id is not None
        self._client = (ctx.config.client_id, secret.reveal())
        self.ctx = ctx
        self.token_url = token_url

    async def obtain(self) -> Grant:
        return await post_grant(
            self.ctx.client,
            self.token_url,
            {"grant_type": "client_credentials"},
            source=self.source,
            refused=_refused,
            client_auth=self._client,
        )


def _refused(status: int, _code: str | None) -> str:
    return f"the token endpoint rejected the client credentials (HTTP {status})"


class StandardMetricsSource(BaseSource):
    """Lists `/documents/` page by page and downloads through `/documents/{id}/download/`.

    A download answered 403 fails that document without renewing: "User must have access
    to the document", and renewing for a document the client may not read would end in
    the new token's probation calling the credentials rejected. A dead token is renewed
    by the API calls (the listing), which run first in every pass.
    """

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        self.settings = self.settings_of(StandardMetricsSettings)
        self.auth = ClientCredentialsAuth(ctx, self.settings.token_url)

    async def list_documents(self) -> AsyncIterator[RemoteDocument]:
        params: dict[str, str] | None = {"page_size": PAGE_SIZE, "page": "1"}
        if self.settings.company_id and params is not None:
            params["company_id"] = self.settings.company_id
        url: str | None = f"{self.base_url}/documents/"
        while url:
            response = await self.client.request("GET", url, auth=self.auth, params=params)
            documents, url = self._page(response)
            for doc in documents:
                yield doc
            params = None  # `next` is absolute and carries the query

    @property
    def renew_statuses(self) -> frozenset[int]:
        return DOWNLOAD_RENEW

    def _page(self, response: ApiResponse) -> tuple[list[RemoteDocument], str | None]:
        if response.status != 200:
            raise failed_call(self.name, "listing", response.status, refused=REFUSED)
        return read_page(response)

    async def download_target(
        self, doc: RemoteDocument, attrs: Mapping[str, str]
    ) -> DownloadTarget:
        url = f"{self.base_url}/documents/{doc.remote_id}/download/"
        return DownloadTarget.authorized(url, await self.auth.lease())


def read_page(response: ApiResponse) -> tuple[list[RemoteDocument], str | None]:
    """The documents of a listing page and the URL of the next one.

    A page of the documented shape is decoded straight into typed records (a re-poll reads
    a million documents); any other JSON object is read field by field, as loosely.
    """
    try:
        page = PAGE.decode(response.body)
    except msgspec.DecodeError:  # another shape, or not JSON: `_loose_page` says which
        return _loose_page(response)
    items = page.results or ()
    return [_document(i.id, i.name, i.uploaded_at) for i in items if i.id], page.next


def _loose_page(response: ApiResponse) -> tuple[list[RemoteDocument], str | None]:
    body = response.json()
    if not isinstance(body, dict):
        raise TransientError("listing page is not a JSON object", url=response.url)
    items: Iterable[Any] = body.get("results") or ()
    found = [
        _document(i["id"], i.get("name"), i.get("uploaded_at"))
        for i in items
        if isinstance(i, dict) and i.get("id")
    ]
    after = body.get("next")
    return found, after if isinstance(after, str) and after else None


def _document(remote_id: object, name: object, uploaded_at: object) -> RemoteDocument:
    doc_id = str(remote_id)
    uploaded = str(uploaded_at or "")
    # no locator: the download URL follows from the id (and costs no memory per document)
    return RemoteDocument(
        doc_id, uploaded, str(name or doc_id), (), None, _date(uploaded), None, EMPTY
    )


def _date(uploaded: str) -> datetime | None:
    """`parse_date`, with the common case (an ISO-8601 UTC time) read in one C call."""
    try:
        parsed = datetime.fromisoformat(uploaded)
    except ValueError:
        return parse_date(uploaded)
    return parsed if parsed.tzinfo is UTC else parse_date(uploaded)
