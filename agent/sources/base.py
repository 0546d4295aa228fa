"""What a source is: the narrow interface the engine drives, and what a source is given."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from agent.config import AgentConfig, SourceConfig
from agent.models import RemoteDocument
from agent.sources.auth import TokenAuth
from agent.sources.http import ApiClient
from agent.state.source_state import SourceState
from agent.transfer.contract import Answer, DownloadContract, Outcome, judge, raise_for_status

S = TypeVar("S")


@dataclass(frozen=True)
class SourceContext:
    """Everything a source is given: its settings, its paced client and its state."""

    config: SourceConfig
    agent: AgentConfig
    client: ApiClient
    state: SourceState


class Source(DownloadContract, Protocol):
    """One remote API as the engine sees it: a listing, metadata, and the download contract."""

    name: str
    credential_cursors: frozenset[str]  # cursors holding credentials, not caches: kept always
    notices: list[str]  # what the last listing has to tell the user, in words (a warning)

    def list_documents(self) -> AsyncIterator[RemoteDocument]:
        """Every document of the source, as of now (a whole listing, for removal detection)."""
        ...

    async def describe(self, doc: RemoteDocument) -> Mapping[str, Any] | None:
        """Metadata for a new or changed document (None: nothing beyond the listing)."""
        ...


class BaseSource:
    """What the four sources share: a name, the client, token auth and generic checks.

    A source sets `self.auth` to its `TokenAuth`; renewals of the download contract go
    there. `check_download` reads the status alone unless the source knows better.
    """

    auth: TokenAuth
    credential_cursors: frozenset[str] = frozenset()

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.name = ctx.config.name
        self.client = ctx.client
        self.base_url = ctx.config.base_url.rstrip("/")
        self.notices: list[str] = []  # set by a listing that has something to tell

    def settings_of(self, kind: type[S]) -> S:
        """The source's own settings, of the type its `type` promises."""
        settings = self.ctx.config.settings
        assert isinstance(settings, kind)  # the configuration builds them from `type`
        return settings

    @property
    def renew_statuses(self) -> frozenset[int]:
        return self.auth.renew_statuses

    async def check_download(self, answer: Answer) -> Outcome:
        return judge(raise_for_status, answer.head)

    async def renew(self, refused: str) -> None:
        await self.auth.renew(refused)

    async def describe(self, doc: RemoteDocument) -> Mapping[str, Any] | None:
        return doc.metadata
