"""`sync-agent demo`: mirror the four sandbox APIs into one folder, check every byte, report.

`run_demo` starts the sandboxes on loopback, signs in to OpenCDE and picks its documents
the way a person would in the browser (here the demo itself follows the pages), runs one
pass over all four sources and prints a table per source. `serve_demo` only serves the
sandboxes and prints the configuration that mirrors them, for a daemon or a container.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
from yarl import URL

from agent.agent import Agent, PassOutcome
from agent.config import Config, load_config
from agent.demo_world import OPENCDE, DemoSource, DemoWorld
from agent.models import PassStats
from agent.sources.context import source_context
from agent.sources.opencde_flows import login, select
from agent.state.store import Store

PAGE_TIMEOUT = aiohttp.ClientTimeout(total=30)
SERVING = "# the sandboxes serve until this process gets SIGTERM or SIGINT (Ctrl-C)"


@dataclass(frozen=True)
class Row:
    """One line of the closing table."""

    source: str
    outcome: PassOutcome
    verified: int
    expected: int

    @property
    def ok(self) -> bool:
        stats = self.outcome
        return isinstance(stats, PassStats) and not stats.failed and self.verified == self.expected


async def run_demo(folder: Path, *, documents: int = 24) -> int:
    """Mirror the four sandboxes into `folder` in one pass; 0 when every byte checks out."""
    world = DemoWorld(documents)
    with tempfile.TemporaryDirectory(prefix="sync-agent-demo-") as temp:
        async with world.running():
            config = _write_config(world, folder, Path(temp))
            print(f"sandbox APIs on loopback; mirroring into {folder}")
            await _pick_opencde_documents(config, world)
            async with Agent.open(config) as agent:
                outcomes = await agent.sync_once()
                rows = [await _row(agent.store, folder, s, outcomes[s.name]) for s in world.sources]
    print_table(rows)
    leaks = len(world.storage.authorization_seen)
    print(f"requests to the storage host carrying Authorization: {leaks}")
    return 0 if leaks == 0 and all(row.ok for row in rows) else 1


async def serve_demo(folder: Path, *, documents: int = 24) -> int:
    """Serve the sandboxes until SIGTERM or SIGINT; print the configuration mirroring them."""
    world = DemoWorld(documents)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with world.running():
        print(world.config_text(folder, opencde=False), end="")
        print(SERVING, flush=True)
        await stop.wait()
    return 0


def _write_config(world: DemoWorld, folder: Path, temp: Path) -> Config:
    path = temp / "demo.toml"
    path.write_text(world.config_text(folder, state_dir=temp / "state"), encoding="utf-8")
    return load_config(path, env={})


# ---------------------------------------------------------------- OpenCDE, as a person would


async def _pick_opencde_documents(config: Config, world: DemoWorld) -> None:
    """Sign in, then tick every document on the CDE's picker page and press Select."""
    async with (
        aiohttp.ClientSession(timeout=PAGE_TIMEOUT) as browser,
        source_context(config, config.source(OPENCDE)) as ctx,
    ):

        async def visit(url: str) -> None:
            async with browser.get(url) as page:
                page.raise_for_status()

        async def pick_all(url: str) -> None:
            async with browser.get(url) as page:
                form = PickerForm.parse(await page.text(), page.url)
            async with browser.post(form.action, data=form.choose_all()) as answer:
                answer.raise_for_status()

        await login(ctx, listen=None, open_url=visit, timeout=30, out=_quiet)
        await select(ctx, listen=None, open_url=pick_all, timeout=30, out=_quiet)


def _quiet(_: str) -> None:
    """The flows print instructions for a person at a browser; the demo is that person."""


class PickerForm(HTMLParser):
    """The picker page's form: where it posts and the document checkboxes it offers."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.document_ids: list[str] = []

    @classmethod
    def parse(cls, html: str, page_url: URL) -> PickerForm:
        form = cls()
        form.feed(html)
        form.action = str(page_url.join(URL(form.action)))
        return form

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form" and not self.action:
            self.action = found.get("action") or ""
        if tag == "input" and found.get("type") == "checkbox" and found.get("value"):
            self.document_ids.append(found["value"] or "")

    def choose_all(self) -> list[tuple[str, str]]:
        return [("document_id", doc_id) for doc_id in self.document_ids] + [("action", "select")]


# ---------------------------------------------------------------- checking and reporting


async def _row(store: Store, folder: Path, source: DemoSource, outcome: PassOutcome) -> Row:
    """Count the documents whose mirrored file has exactly the sandbox's bytes."""
    expected = source.downloadable()
    verified = 0
    for doc_id in expected:
        row = await store.documents.get(source.name, doc_id)
        path = folder / row.rel_path if row and row.rel_path else None
        want = source.content(doc_id) or b""
        if path is not None and path.is_file() and _digest(path) == hashlib.sha256(want).digest():
            verified += 1
        elif isinstance(outcome, PassStats):
            print(f"  {source.name}: {doc_id} is not mirrored as served ({path})")
    return Row(source.name, outcome, verified, len(expected))


def _digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def print_table(rows: list[Row]) -> None:
    """source, listed, downloaded, skipped, bytes, verified: one line per source."""
    header = f"{'source':<18}{'listed':>7}{'downloaded':>11}{'skipped':>8}{'bytes':>11}  verified"
    print(header)
    for row in rows:
        if isinstance(row.outcome, PassStats):
            s = row.outcome
            counts = f"{s.listed:>7}{s.downloaded:>11}{s.skipped:>8}{_size(s.bytes):>11}"
        else:
            counts = f"  failed: {row.outcome}"
        print(f"{row.source:<18}{counts}  {row.verified}/{row.expected}")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
