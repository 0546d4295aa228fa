"""A real (headless) Chromium clicks through the sandbox's selection page for `select`."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.config import AgentConfig, OpenCdeSettings, Secret, SourceConfig
from agent.sandbox.opencde import RICH, OpenCdeSandbox
from agent.sandbox.storage import StorageHost
from agent.sources.base import SourceContext
from agent.sources.http import ApiClient, open_session
from agent.sources.opencde_flows import list_selection, select
from agent.state.source_state import MemorySourceState
from agent.transfer.pacing import RateLimiter
from tests.browser.cdp import Page, chromium, chromium_binary

pytestmark = pytest.mark.browser
BINARY = chromium_binary()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    if BINARY is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    async with chromium(BINARY, tmp_path / "profile") as tab:
        yield tab


async def test_a_person_ticks_documents_and_presses_select_in_chromium(
    page: Page, tmp_path: Path
) -> None:
    storage = StorageHost()
    cde = OpenCdeSandbox(storage, **RICH)
    plan = cde.add_document("Ground floor plan", "plan.pdf", b"%PDF-1.7")
    model = cde.add_document("Structural model", "model.ifc", b"ISO-10303-21;")
    cde.add_document("Not picked", "notes.txt", b"no")
    state = MemorySourceState()
    await state.save_token("refresh", cde.issue_tokens().refresh_token)

    async def person_in_chromium(url: str) -> None:
        await page.call("Page.enable")
        await page.call("Page.navigate", url=url)
        await page.wait_for("document.getElementById('select-button') !== null")
        for doc_id in (plan, model):
            await page.evaluate(f"document.getElementById('doc-{doc_id}').click()")
        await page.evaluate("document.getElementById('select-button').click()")

    async with storage.running(), cde.running() as base, open_session() as session:
        ctx = _context(base, session, state, tmp_path)
        added = await select(ctx, listen=None, open_url=person_in_chromium, out=lambda _: None)
        landing = await page.wait_for("document.body && document.body.innerText")
        shot = await page.call("Page.captureScreenshot", format="png")

    assert sorted(added) == sorted([plan, model])
    assert sorted(d.document_id for d in await list_selection(ctx)) == sorted([plan, model])
    assert "close" in landing.lower()  # the agent's callback page thanked the person
    (tmp_path / "after-select.png").write_bytes(base64.b64decode(shot["data"]))


def _context(base: str, session: object, state: MemorySourceState, tmp: Path) -> SourceContext:
    config = SourceConfig(
        name="cde",
        type="opencde",
        base_url=base,
        poll_interval=300.0,
        requests_per_minute=None,
        enabled=True,
        client_id="demo-client",
        client_secret=Secret("demo-secret"),
        write_metadata=False,
        settings=OpenCdeSettings(),
    )
    agent = AgentConfig(mirror_dir=tmp / "mirror", state_dir=tmp, state_url="sqlite+aiosqlite://")
    client = ApiClient(session, RateLimiter(None), source="cde")  # type: ignore[arg-type]
    return SourceContext(config, agent, client, state)
