"""Standard Metrics: client-credentials token, paginated listing, download via signed redirect."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from agent.config import StandardMetricsSettings
from agent.errors import TransientError
from agent.models import RemoteDocument
from agent.sources.auth import Grant, TokenAuth, post_grant
from agent.sources.base import BaseSource, SourceContext
from agent.sources.http import ApiResponse
from agent.sources.vendor import failed_call, parse_date
from agent.transfer.contract import DownloadTarget

PAGE_SIZE = "100"  # the documented maximum
REFUSED = frozenset({401, 403})


class ClientCredentialsAuth(TokenAuth):
    """OAuth2 client-credentials grant with HTTP Basic client authentication."""

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
    """Lists `/documents/` page by page and downloads through `/documents/{id}/download/`."""

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
            page = self._page(await self.client.request("GET", url, auth=self.auth, params=params))
            for item in page.get("results") or ():
                if isinstance(item, dict) and item.get("id"):
                    yield self._document(item)
            url, params = page.get("next"), None  # `next` is absolute and carries the query

    def _page(self, response: ApiResponse) -> dict[str, Any]:
        if response.status != 200:
            raise failed_call(self.name, "listing", response.status, refused=REFUSED)
        body = response.json()
        if not isinstance(body, dict):
            raise TransientError("listing page is not a JSON object", url=response.url)
        return body

    def _document(self, item: Mapping[str, Any]) -> RemoteDocument:
        doc_id = str(item["id"])
        uploaded = str(item.get("uploaded_at") or "")
        return RemoteDocument(
            remote_id=doc_id,
            version=uploaded,
            name=str(item.get("name") or doc_id),
            modified=parse_date(uploaded),
        )  # no locator: the download URL follows from the id (and costs no memory per doc)

    async def download_target(
        self, doc: RemoteDocument, attrs: Mapping[str, str]
    ) -> DownloadTarget:
        url = f"{self.base_url}/documents/{doc.remote_id}/download/"
        return DownloadTarget.authorized(url, await self.auth.lease())
