"""What a source is: the narrow interface the engine drives, and what a source is given."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agent.config import AgentConfig, SourceConfig
from agent.errors import PermanentError, SkipDocument, TransientError
from agent.models import DownloadTarget, RemoteDocument, ResponseHead
from agent.sources.http import ApiClient
from agent.state.source_state import SourceState
from agent.transfer.retry import TRANSIENT_STATUSES, parse_retry_after


@dataclass(frozen=True)
class SourceContext:
    """Everything a source is given: its settings, its paced client and its state."""

    config: SourceConfig
    agent: AgentConfig
    client: ApiClient
    state: SourceState


class Source(Protocol):
    """One remote API as the engine sees it."""

    name: str

    def list_documents(self) -> AsyncIterator[RemoteDocument]:
        """Every document of the source, as of now (a whole listing, for removal detection)."""
        ...

    async def download_target(
        self, doc: RemoteDocument, attrs: Mapping[str, str]
    ) -> DownloadTarget:
        """A fresh target for the document's bytes; `attrs` are the job's own attributes."""
        ...

    def check_response(self, head: ResponseHead) -> None:
        """Raise a DocumentError for a first-hop response that is not the document's bytes."""
        ...

    async def on_unauthorized(self, rejected: str) -> None:
        """The first hop of a download answered 401/403: renew the credentials once."""
        ...

    async def describe(self, doc: RemoteDocument) -> Mapping[str, Any] | None:
        """Metadata for a new or changed document (None: nothing beyond the listing)."""
        ...


class BaseSource:
    """Defaults shared by the source implementations."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.name = ctx.config.name
        self.client = ctx.client

    def check_response(self, head: ResponseHead) -> None:
        check_download_status(head)

    async def on_unauthorized(self, rejected: str) -> None:
        return None

    async def describe(self, doc: RemoteDocument) -> Mapping[str, Any] | None:
        return doc.metadata


def check_download_status(head: ResponseHead) -> None:
    """The generic meaning of a download response status."""
    status = head.status
    if status in (200, 206):
        return
    if status in TRANSIENT_STATUSES:
        raise TransientError(
            "download failed",
            url=head.url,
            status=status,
            retry_after=parse_retry_after(head.headers.get("Retry-After")),
        )
    if status == 204:
        raise SkipDocument("no content", url=head.url)
    if status in (401, 403, 404, 410):
        raise PermanentError(_PERMANENT_REASONS[status], url=head.url, status=status)
    if 500 <= status < 600:
        raise TransientError("server error", url=head.url, status=status)
    raise PermanentError("unexpected response", url=head.url, status=status)


_PERMANENT_REASONS = {401: "not authenticated", 403: "forbidden", 404: "not found", 410: "gone"}
