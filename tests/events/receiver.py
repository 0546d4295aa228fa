"""A real webhook receiver for tests: verifies every signature with the Standard Webhooks
algorithm, answers a programmed list of statuses first, and can go down and come back."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from agent.events.shape import CLOUDEVENTS_TYPE

SECRET = "whsec_" + base64.b64encode(b"receiver-secret-of-32-bytes!!!!!").decode()


class Receiver:
    """Records what it accepted (2xx) and every attempt; refuses bad signatures with 401."""

    def __init__(self, secret: str, answers: Iterable[int] = (), delay: float = 0.0) -> None:
        self.verifier = Webhook(secret)
        self.answers = deque(answers)
        self.delay = delay  # seconds each answer takes
        self.accepted: list[dict[str, Any]] = []
        self.attempts: list[str] = []  # webhook-id of every verified attempt, in order
        self.problems: list[str] = []  # bad signatures, ids or content types
        self.runner: web.AppRunner | None = None
        self.port = 0
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/sync"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = self.verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.problems.append(f"signature: {exc}")
            return web.Response(status=401)
        if event["id"] != request.headers["webhook-id"] or event["specversion"] != "1.0":
            self.problems.append(f"id or specversion: {event}")
        if request.headers.get("Content-Type") != CLOUDEVENTS_TYPE:
            self.problems.append(f"content type {request.headers.get('Content-Type')}")
        self.attempts.append(request.headers["webhook-id"])
        await asyncio.sleep(self.delay)
        status = self.answers.popleft() if self.answers else 200
        if 200 <= status < 300:
            self.accepted.append(json.loads(body))
        async with self._changed:
            self._changed.notify_all()
        headers = {"Location": "http://127.0.0.1:9/elsewhere"} if 300 <= status < 400 else None
        return web.Response(status=status, headers=headers)

    async def start(self) -> None:
        """Serve (again) on loopback, on the same port as before if there was one."""
        app = web.Application()
        app.router.add_post("/hooks/sync", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        """Go down: connections are refused until `start` again."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def until_accepted(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.accepted) >= count)

        await asyncio.wait_for(enough(), timeout)
        return self.accepted

    def ids(self) -> list[str]:
        return [event["id"] for event in self.accepted]

    def seqs(self) -> list[int]:
        return [event["data"]["seq"] for event in self.accepted]
