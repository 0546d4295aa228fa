"""The demo's world: the four sandbox APIs on loopback, populated, and a config mirroring them.

`DemoWorld.running()` serves Standard Metrics, Huddle, Index Health and OpenCDE (with one
storage host behind their signed URLs) on 127.0.0.1, and `config_text()` is the TOML
configuration that mirrors all of them. Each `DemoSource` also knows, independently of the
agent, which bytes each of its documents should have, so the demo can check the mirror.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agent.sandbox.huddle import HuddleSandbox
from agent.sandbox.index_health import IndexHealthSandbox
from agent.sandbox.opencde import OpenCdeSandbox
from agent.sandbox.standard_metrics import StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from agent.templates import toml_value

CLIENT_ID = "demo-client"
CLIENT_SECRET = "demo-secret"  # noqa: S105 - the sandboxes' published fake credential
HUDDLE_REFRESH_TOKEN = "demo-refresh-0"  # noqa: S105 - the Huddle sandbox's first token
OPENCDE = "opencde"


@dataclass
class DemoSource:
    """One sandbox as the demo mirrors it: its config table and the bytes it should yield."""

    name: str
    type: str
    settings: Callable[[], Mapping[str, object]]  # built once the sandbox has its URL
    content: Callable[[str], bytes | None]  # remote id -> bytes; None: nothing to download
    ids: list[str] = field(default_factory=list)  # every document the source should list
    notes: tuple[str, ...] = ()  # comment lines above its table

    def downloadable(self) -> list[str]:
        return [i for i in self.ids if self.content(i) is not None]


class DemoWorld:
    """The four sandboxes, populated with `documents` documents each."""

    def __init__(self, documents: int = 24) -> None:
        self.storage = StorageHost()
        self.standard_metrics = StandardMetricsSandbox(self.storage)
        self.huddle = HuddleSandbox(self.storage)
        self.index_health = IndexHealthSandbox(self.storage)
        self.opencde = OpenCdeSandbox(self.storage)
        self.sources = [
            self._standard_metrics(documents),
            self._huddle(documents),
            self._index_health(documents),
            self._opencde(documents),
        ]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DemoWorld]:
        async with AsyncExitStack() as stack:
            for served in (
                self.storage,
                self.standard_metrics,
                self.huddle,
                self.index_health,
                self.opencde,
            ):
                await stack.enter_async_context(served.running())
            yield self

    def source(self, name: str) -> DemoSource:
        return next(s for s in self.sources if s.name == name)

    def config_text(
        self, mirror_dir: Path, *, state_dir: Path | None = None, opencde: bool = True
    ) -> str:
        """The configuration for a running world; OpenCDE off when nobody will `select`."""
        agent: dict[str, object] = {"mirror_dir": str(mirror_dir)}
        if state_dir is not None:
            agent["state_dir"] = str(state_dir)
        lines = ["# sync-agent demo: the four sandbox APIs on loopback.", "[agent]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in agent.items()]
        for source in self.sources:
            enabled = opencde or source.type != OPENCDE
            lines += _source_table(source, enabled)
        return "\n".join(lines) + "\n"

    # ---- the sources --------------------------------------------------------------------

    def _standard_metrics(self, n: int) -> DemoSource:
        sandbox = self.standard_metrics
        return DemoSource(
            name="standard-metrics",
            type="standard-metrics",
            settings=lambda: {"base_url": sandbox.api_url, "client_secret": CLIENT_SECRET},
            content=sandbox.content,
            ids=sandbox.populate_demo(n=n, seed=0),
        )

    def _huddle(self, n: int) -> DemoSource:
        sandbox = self.huddle
        workspace = sandbox.populate_demo(n=n, seed=0)
        return DemoSource(
            name="huddle",
            type="huddle",
            settings=lambda: {
                "base_url": sandbox.url(""),
                "token_url": sandbox.token_url,
                "refresh_token": HUDDLE_REFRESH_TOKEN,
                "workspaces": [workspace],
            },
            content=lambda doc_id: sandbox.document(doc_id).data,
            ids=list(sandbox.tree.documents),
        )

    def _index_health(self, n: int) -> DemoSource:
        sandbox = self.index_health
        user = {
            "first_name": "Demo",
            "last_name": "User",
            "email": "demo@example.com",
            "group_name": "demo",
        }
        return DemoSource(
            name="index-health",
            type="index-health",
            settings=lambda: {
                "base_url": sandbox.base_url or "",
                "client_secret": CLIENT_SECRET,
                "user": user,
            },
            content=sandbox.document_bytes,
            ids=sandbox.populate_demo(n=n, seed=0),
        )

    def _opencde(self, n: int) -> DemoSource:
        sandbox = self.opencde

        def content(doc_id: str) -> bytes:
            return sandbox.documents.require(doc_id).latest.content(doc_id)

        return DemoSource(
            name=OPENCDE,
            type=OPENCDE,
            settings=lambda: {"base_url": sandbox.base_url, "client_secret": CLIENT_SECRET},
            content=content,
            ids=sandbox.populate_demo(n=n, seed=0),
            notes=("OpenCDE mirrors what `sync-agent select opencde` picked in the browser",),
        )


def _source_table(source: DemoSource, enabled: bool) -> list[str]:
    settings = dict(source.settings())
    user = settings.pop("user", None)
    lines = ["", *(f"# {note}" for note in source.notes), "[[sources]]"]
    values = {"name": source.name, "type": source.type, "client_id": CLIENT_ID, **settings}
    lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    lines += ["poll_interval = " + toml_value("5m" if source.type == OPENCDE else "1m")]
    lines.append(f"enabled = {'true' if enabled else 'false'}")
    if isinstance(user, Mapping):
        lines.append("[sources.user]")
        lines += [f"{key} = {toml_value(value)}" for key, value in user.items()]
    return lines
