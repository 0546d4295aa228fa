"""The download contract: what a source hands the transfer layer, and what it answers back.

A source the agent downloads from implements `DownloadContract`:

    download_target(doc, attrs) -> DownloadTarget   where to GET, with which headers
    check_download(answer)      -> Outcome          what a first-hop answer means (async:
                                                    it may read the start of the body)
    renew(refused)                                  new credentials after a refusal
    renew_statuses                                  first-hop statuses that mean "renew"

An authorised target carries a `Credential`: the transfer layer waits for `ready()` before
it sends one and tells with `settle()` whether the server accepted it, so the source can
tell a token that expired (it worked for someone) from credentials that are rejected.

Everything here is plain data, a pure function or a Protocol: this layer never imports a
source, and a source needs nothing from transfer beyond this module and `retry`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from agent.errors import (
    DiskSpaceError,
    DocumentError,
    ExpiredUrlError,
    IntegrityError,
    PermanentError,
    SkipDocument,
    TransientError,
)
from agent.models import EMPTY, RemoteDocument

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_PERMANENT_REASONS = {401: "not authenticated", 403: "forbidden", 404: "not found", 410: "gone"}


class Credential(Protocol):
    """The credentials one request carries, as the transfer layer handles them."""

    @property
    def header(self) -> str:
        """The `Authorization` value."""
        ...

    async def ready(self) -> None:
        """Wait until this credential may be sent (a new token is proven by one request)."""
        ...

    def settle(self, accepted: bool | None) -> None:
        """Say how the server took it: accepted, refused, or no word (no answer, 5xx).

        Only the first call after `ready()` counts; later ones are ignored.
        """
        ...


@dataclass(frozen=True, slots=True)
class DownloadTarget:
    """Where to GET a document's bytes.

    `headers` go to the first hop only. A redirect never carries `Authorization`, and
    carries none of these headers at all when it leaves the first hop's origin.
    `paced` says the first hop is an API call that counts against the source's budget.
    """

    url: str
    headers: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    paced: bool = True
    credential: Credential | None = None

    @classmethod
    def authorized(
        cls, url: str, credential: Credential, headers: Mapping[str, str] = EMPTY
    ) -> DownloadTarget:
        """A target whose first hop carries `credential` as its `Authorization` header."""
        return cls(url, {**headers, "Authorization": credential.header}, credential=credential)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """The status line and headers of an answer, as a source's check reads them."""

    status: int
    url: str
    headers: Mapping[str, str]


class Answer:
    """A first-hop answer as a source's check sees it: the head now, the body on request.

    `peek` reads the start of the body (a JSON error envelope, say); what it read is kept
    in `prefix` and becomes the start of the document when the answer is the content.
    """

    def __init__(self, head: ResponseHead, read: Callable[[int], Awaitable[bytes]]) -> None:
        self.head = head
        self.prefix = b""
        self._read = read
        self._peeked = False

    @classmethod
    def of(cls, head: ResponseHead, body: bytes = b"") -> Answer:
        """An answer with a body already in memory (tests, replays)."""
        rest = [body]

        async def read(limit: int) -> bytes:
            chunk, rest[0] = rest[0][:limit], rest[0][limit:]
            return chunk

        return cls(head, read)

    async def peek(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body (fewer only when the body is shorter)."""
        if not self._peeked:
            self._peeked = True
            parts: list[bytes] = []
            got = 0
            while got < limit and (chunk := await self._read(limit - got)):
                parts.append(chunk)
                got += len(chunk)
            self.prefix = b"".join(parts)
        return self.prefix


class Verdict(StrEnum):
    """What an answer means for the request that got it."""

    CONTENT = "content"  # the document's bytes (or the API's answer) follow
    RETRY = "retry"  # try the same target again after a pause
    RENEW = "renew"  # the credentials were refused: renew them, then try again
    RETARGET = "retarget"  # ask the source for a fresh target (an expired URL, say)
    SKIP = "skip"  # nothing to download by design; the reason is the error's message
    FAIL = "fail"  # this document failed; tried again only on a later pass


@dataclass(frozen=True, slots=True)
class Outcome:
    """A check's verdict on an answer, with the error that explains anything but content.

    `value` is what a check read from a content answer (an API envelope's data, say).
    """

    verdict: Verdict
    error: DocumentError | None = None
    value: Any = None

    @classmethod
    def content(cls, value: Any = None) -> Outcome:
        return cls(Verdict.CONTENT, value=value)

    @classmethod
    def renew(cls, url: str, status: int | None) -> Outcome:
        """The server refused the credentials the request carried."""
        refused = TransientError("the server refused our credentials", url=url, status=status)
        return cls(Verdict.RENEW, refused)

    @classmethod
    def of(cls, error: DocumentError) -> Outcome:
        """The outcome an error stands for."""
        return cls(_verdict_of(error), error)

    def failure(self) -> DocumentError:
        """The error to raise when giving up on this outcome."""
        return self.error or TransientError(f"gave up on a {self.verdict} answer")


def _verdict_of(error: DocumentError) -> Verdict:
    if isinstance(error, SkipDocument):
        return Verdict.SKIP
    if isinstance(error, ExpiredUrlError):
        return Verdict.RETARGET
    if not isinstance(error, TransientError):
        return Verdict.FAIL
    if isinstance(error, IntegrityError | DiskSpaceError) or error.status is None:
        return Verdict.RETRY
    # a transient 4xx (409 moving, 202 converting, 408...) may need a fresh target
    return Verdict.RETARGET if error.status < 500 and error.status != 429 else Verdict.RETRY


def status_error(head: ResponseHead) -> DocumentError | None:
    """The generic meaning of a download answer's status; None for the document's bytes."""
    status, url = head.status, head.url
    if status in (200, 206):
        return None
    if status in TRANSIENT_STATUSES:
        return TransientError("download failed", url=url, status=status)
    if status == 204:
        return SkipDocument("no content", url=url)
    if status in _PERMANENT_REASONS:
        return PermanentError(_PERMANENT_REASONS[status], url=url, status=status)
    if 500 <= status < 600:
        return TransientError("server error", url=url, status=status)
    return PermanentError("unexpected response", url=url, status=status)


def raise_for_status(head: ResponseHead) -> None:
    """Raise what `status_error` names, for checks written as a chain of raises."""
    error = status_error(head)
    if error is not None:
        raise error


def judge(check: Callable[[ResponseHead], None], head: ResponseHead) -> Outcome:
    """The outcome of a check written as `raise_for_status` is: content unless it raises."""
    try:
        check(head)
    except DocumentError as error:
        return Outcome.of(error)
    return Outcome.content()


def token_verdict(outcome: Outcome, status: int) -> bool | None:
    """Whether an answer shows the credentials were accepted (None: it does not say)."""
    if outcome.verdict is Verdict.RENEW:
        return False
    error = outcome.error
    said = error.status if error is not None and error.status is not None else status
    return None if said >= 500 or said == 429 else True


class DownloadContract(Protocol):
    """What the transfer layer needs from a source to download its documents."""

    @property
    def renew_statuses(self) -> frozenset[int]:
        """First-hop statuses that mean the credentials were refused (401, or 403 too)."""
        ...

    async def download_target(
        self, doc: RemoteDocument, attrs: Mapping[str, str]
    ) -> DownloadTarget:
        """A fresh target for the document's bytes; `attrs` are the job's own attributes."""
        ...

    async def check_download(self, answer: Answer) -> Outcome:
        """What a first-hop answer whose status is not a renewal status means."""
        ...

    async def renew(self, refused: str) -> None:
        """Renew the credentials after the server refused `refused` (an Authorization value).

        Raises AuthenticationError when the credentials themselves are rejected.
        """
        ...
