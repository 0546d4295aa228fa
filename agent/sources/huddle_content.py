"""Huddle content responses: what each status means, and the conversion (202) flow.

A rendition is fetched by the transfer layer like any document, with `Accept: <mime>` on
the content link. Before that, `Converter.prepare` asks with a HEAD probe whether the
conversion exists: 200 -> fetch it; 202 -> poll the progress resource in `Location` with
growing pauses (bounded, about two minutes) until `Complete`, then fetch; a 500 from the
progress resource -> RetryLaterError("conversion failed"), tried again on a later pass;
406 -> SkipDocument("format not supported", with the document's `Supported-Accept`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

from agent.errors import RetryLaterError, SkipDocument, TransientError
from agent.sources.http import ApiClient, ApiResponse, Authenticator
from agent.sources.huddle_items import href
from agent.sources.vendor import header
from agent.transfer.contract import ResponseHead, raise_for_status

Sleep = Callable[[float], Awaitable[None]]
POLL_BUDGET = 120.0  # seconds of waiting for one conversion before giving up this pass
POLL_FIRST = 0.5
POLL_CAP = 15.0
PROGRESS_DONE = "Complete"
PROGRESS_FAILED = "Failed"


def check_content(head: ResponseHead) -> None:
    """Raise the DocumentError a content response means; return for the document's bytes."""
    status = head.status
    if status == 409:
        raise TransientError("document is being moved", url=head.url, status=status)
    if status in (204, 404):
        raise SkipDocument("no content", url=head.url)
    if status == 406:
        raise SkipDocument(unsupported(header(head.headers, "Supported-Accept")), url=head.url)
    if status == 202:
        raise TransientError("conversion not ready yet", url=head.url, status=status)
    raise_for_status(head)


def unsupported(supported_accept: str | None) -> str:
    """The skip reason for a refused conversion, naming the types the document offers."""
    offered = [t.strip() for t in (supported_accept or "").split(",") if t.strip()]
    return "format not supported" + (f" (supported: {', '.join(offered)})" if offered else "")


def poll_delays(
    budget: float = POLL_BUDGET, first: float = POLL_FIRST, cap: float = POLL_CAP
) -> list[float]:
    """Pauses before each progress poll: doubling from `first`, capped, summing to `budget`."""
    delays: list[float] = []
    delay, total = first, 0.0
    while total + delay <= budget:
        delays.append(delay)
        total += delay
        delay = min(cap, delay * 2)
    return delays


def progress_status(body: Any) -> str:
    status = body.get("status") if isinstance(body, dict) else None
    return status if isinstance(status, str) else ""


def same_origin(a: str, b: str) -> bool:
    one, two = urlsplit(a), urlsplit(b)
    return (one.scheme, one.netloc) == (two.scheme, two.netloc)


class Converter:
    """Makes sure a conversion exists before its download starts."""

    def __init__(
        self,
        client: ApiClient,
        auth: Authenticator,
        *,
        sleep: Sleep = asyncio.sleep,
        budget: float = POLL_BUDGET,
    ) -> None:
        self.client = client
        self.auth = auth
        self.sleep = sleep
        self.budget = budget

    async def prepare(self, content_url: str, mime: str, reason: str) -> str:
        """The URL to GET with `Accept: mime` once the conversion is ready."""
        headers = {"Accept": mime, "x-download-reason": reason}
        probe = await self.client.request(
            "HEAD", content_url, auth=self.auth, headers=headers, passthrough=frozenset({409})
        )
        if probe.status == 202:
            location = probe.header("Location")
            if not location:
                raise TransientError("conversion accepted without Location", url=content_url)
            return await self._await(urljoin(content_url, location), content_url)
        if probe.status in (200, 206) or 300 <= probe.status < 400:
            return content_url
        check_content(_head(probe))
        return content_url  # a status check_content lets through is the bytes

    async def _await(self, progress_url: str, content_url: str) -> str:
        for delay in poll_delays(self.budget):
            await self.sleep(delay)
            response = await self.client.request(
                "GET",
                progress_url,
                auth=self.auth,
                headers={"Accept": "application/json"},
                passthrough=frozenset({500}),
            )
            body = _progress_body(response)
            status = progress_status(body)
            if response.status == 500 or status == PROGRESS_FAILED:
                raise RetryLaterError(_failure(body), url=progress_url, status=response.status)
            if status == PROGRESS_DONE:
                ready = href(body, "content")
                return ready if ready and same_origin(ready, content_url) else content_url
        raise RetryLaterError("conversion still running", url=progress_url)


def _progress_body(response: ApiResponse) -> Mapping[str, Any]:
    if response.status not in (200, 500):
        raise TransientError(
            "conversion progress unavailable", url=response.url, status=response.status
        )
    try:
        body = response.json()
    except TransientError:
        return {}
    return body if isinstance(body, dict) else {}


def _failure(body: Mapping[str, Any]) -> str:
    message = body.get("message")
    if isinstance(message, str) and message.strip():
        return f"conversion failed: {message.strip()[:200]}"
    return "conversion failed"


def _head(response: ApiResponse) -> ResponseHead:
    return ResponseHead(response.status, response.url, response.headers)
