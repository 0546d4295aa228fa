"""Helpers for the Index Health sandbox tests: a running sandbox and a JSON client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict

from agent.sandbox.index_health import RICH, IndexHealthSandbox
from agent.sandbox.storage import StorageHost

START = 1_700_000_000.0
USER = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.org",
    "group_name": "north-clinic",
}
PDF_BYTES = b"%PDF-1.4\n" + bytes(range(256)) * 40


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def auth_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_id": "demo-client",
        "client_secret": "demo-secret",
        "fingerprint": "device-fingerprint-123",
        "user": dict(USER),
    }
    body.update(overrides)
    return body


@dataclass
class Api:
    sandbox: IndexHealthSandbox
    storage: StorageHost
    base: str
    http: aiohttp.ClientSession
    clock: FakeClock

    async def post(
        self, path: str, body: object, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.post(self.base + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json()

    async def get(
        self, path: str, token: str | None, **headers: str
    ) -> tuple[int, bytes, CIMultiDict[str]]:
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.get(self.base + path, headers=headers) as resp:
            return resp.status, await resp.read(), CIMultiDict(resp.headers)

    async def token(self) -> str:
        status, body = await self.post("/generate-client-auth-token", auth_body())
        assert status == 200, body
        data = body["data"]
        return str(data.get("auth_token") or data.get("access_token"))


@asynccontextmanager
async def api(*, minimal: bool = False, **options: Any) -> AsyncIterator[Api]:
    """A running sandbox: the RICH readings unless `minimal`, then `options` on top."""
    clock = FakeClock()
    storage = StorageHost(clock=clock)
    knobs = options if minimal else {**RICH, **options}
    sandbox = IndexHealthSandbox(storage, clock=clock, **knobs)
    async with storage.running(), sandbox.running() as base, aiohttp.ClientSession() as http:
        yield Api(sandbox, storage, base, http, clock)


def add_report(sandbox: IndexHealthSandbox) -> tuple[str, str]:
    """A collection with one PDF whose name lacks the extension its file path has."""
    collection = sandbox.add_collection("Reports")
    doc = sandbox.add_document(
        collection, "Quarterly report", PDF_BYTES, file_path="docs/q3.pdf", tags=["audit"]
    )
    return collection, doc
