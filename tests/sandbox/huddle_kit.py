"""Helpers for the Huddle sandbox tests: a running sandbox and a raw HTTP client for it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from agent.sandbox.huddle import RICH, HuddleSandbox
from agent.sandbox.storage import StorageHost

START = 1_750_000_000.0
TEXT = b"Hello - this is the content of your text file. " * 20
HUDDLE_JSON = "application/vnd.huddle.data+json"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Api:
    sandbox: HuddleSandbox
    storage: StorageHost
    clock: FakeClock
    http: aiohttp.ClientSession
    base: str
    token: str

    async def get(
        self, url: str, headers: Mapping[str, str] | None = None, *, auth: str = "Bearer"
    ) -> Reply:
        full = url if url.startswith("http") else self.base + url
        sent = {"Authorization": f"{auth} {self.token}", **(headers or {})}
        async with self.http.get(full, headers=sent, allow_redirects=False) as response:
            return Reply(response.status, response.headers, await response.read())

    async def token_post(self, form: Mapping[str, str]) -> Reply:
        async with self.http.post(self.base + "/token", data=dict(form)) as response:
            return Reply(response.status, response.headers, await response.read())


@asynccontextmanager
async def huddle(*, minimal: bool = False, **options: Any) -> AsyncIterator[Api]:
    """A running sandbox: the RICH readings unless `minimal`, then `options` on top."""
    clock = FakeClock()
    storage = StorageHost(clock=clock)
    knobs = options if minimal else {**RICH, **options}
    sandbox = HuddleSandbox(storage, clock=clock, **knobs)
    async with (
        storage.running(),
        sandbox.running() as base,
        aiohttp.ClientSession() as http,
    ):
        yield Api(sandbox, storage, clock, http, base, sandbox.issue_access_token())


def link(body: Mapping[str, Any], rel: str) -> dict[str, str] | None:
    return next((lk for lk in body["links"] if lk["rel"] == rel), None)


def href(body: Mapping[str, Any], rel: str) -> str:
    found = link(body, rel)
    assert found is not None, f"no {rel} link"
    return found["href"]
