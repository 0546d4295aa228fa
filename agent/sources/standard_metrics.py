"""Standard Metrics: client-credentials token, paginated listing, download via signed redirect."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from agent.config import StandardMetricsSettings
from agent.errors import AuthenticationError, FatalSourceError, TransientError
from agent.models import DownloadTarget, RemoteDocument
from agent.sources.auth import Token, TokenAuth, parse_expires_in
from agent.sources.base import BaseSource, SourceContext
from agent.sources.http import ApiClient, ApiResponse

PAGE_SIZE = "100"  # the documented maximum


class ClientCredentialsAuth(TokenAuth):
    """OAuth2 client-credentials grant with HTTP Basic client authentication."""

    def __init__(self, ctx: SourceContext, token_url: str) -> None:
        super().__init__(ctx.state)
        secret = ctx.config.client_secret
        assert secret is not None  # enforced by config
        assert ctx.config.client_id is not None
        pair = f"{ctx.config.client_id}:{secret.reveal()}".encode()
        self._basic = "Basic " + base64.b64encode(pair).decode()
        self.client: ApiClient = ctx.client
        self.token_url = token_url
        self.source = ctx.config.name

    async def obtain(self) -> Token:
        response = await self.client.request(
            "POST",
            self.token_url,
            headers={"Authorization": self._basic, "Cache-Control": "no-cache"},
            data={"grant_type": "client_credentials"},
        )
        if response.status in (400, 401, 403):
            raise AuthenticationError(
                self.source,
                f"the token endpoint rejected the client credentials (HTTP {response.status})",
            )
        if response.status != 200:
            raise TransientError("token request failed", url=self.token_url, status=response.status)
        body = response.json()
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access:
            raise TransientError("token response without access_token", url=self.token_url)
        return Token(access, self.clock() + parse_expires_in(body.get("expires_in")))


class StandardMetricsSource(BaseSource):
    """Lists `/documents/` page by page and downloads through `/documents/{id}/download/`."""

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        settings = ctx.config.settings
        assert isinstance(settings, StandardMetricsSettings)
        self.settings = settings
        self.base_url = ctx.config.base_url
        self.auth = ClientCredentialsAuth(ctx, settings.token_url)

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
        if response.status in (401, 403):
            raise AuthenticationError(
                self.name, f"the API refused our token (HTTP {response.status})"
            )
        if response.status != 200:
            raise FatalSourceError(self.name, f"listing failed with HTTP {response.status}")
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
            modified=_parse_iso(uploaded),
        )  # no locator: the download URL follows from the id (and costs no memory per doc)

    async def download_target(
        self, doc: RemoteDocument, attrs: Mapping[str, str]
    ) -> DownloadTarget:
        url = f"{self.base_url}/documents/{doc.remote_id}/download/"
        return DownloadTarget(url, {"Authorization": await self.auth.authorization()})

    async def on_unauthorized(self, rejected: str) -> None:
        await self.auth.refresh(rejected)


def _parse_iso(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
