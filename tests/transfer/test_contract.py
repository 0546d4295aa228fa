"""The download contract's plain parts: status meanings, outcomes, answers, token verdicts."""

from __future__ import annotations

import pytest

from agent.errors import (
    DiskSpaceError,
    DocumentError,
    ExpiredUrlError,
    IntegrityError,
    PermanentError,
    RetryLaterError,
    SkipDocument,
    TransientError,
)
from agent.transfer.contract import (
    Answer,
    DownloadTarget,
    Outcome,
    ResponseHead,
    Verdict,
    judge,
    raise_for_status,
    status_error,
    token_verdict,
)

URL = "http://127.0.0.1/doc"


def head(status: int) -> ResponseHead:
    return ResponseHead(status, URL, {})


@pytest.mark.parametrize(
    ("status", "kind", "message"),
    [
        (200, None, None),
        (206, None, None),
        (204, SkipDocument, "no content"),
        (401, PermanentError, "not authenticated"),
        (403, PermanentError, "forbidden"),
        (404, PermanentError, "not found"),
        (410, PermanentError, "gone"),
        (408, TransientError, "download failed"),
        (429, TransientError, "download failed"),
        (503, TransientError, "download failed"),
        (507, TransientError, "server error"),
        (418, PermanentError, "unexpected response"),
    ],
)
def test_a_download_status_means_content_or_the_named_error(
    status: int, kind: type[DocumentError] | None, message: str | None
) -> None:
    """The generic meaning of a first-hop status, with the status and URL in the error."""
    error = status_error(head(status))
    if kind is None:
        assert error is None
        return
    assert type(error) is kind
    assert error.message == message
    assert error.url == URL


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (SkipDocument("no content"), Verdict.SKIP),
        (PermanentError("gone", status=410), Verdict.FAIL),
        (ExpiredUrlError("expired", status=403), Verdict.RETARGET),
        (TransientError("moving", status=409), Verdict.RETARGET),
        (TransientError("converting", status=202), Verdict.RETARGET),
        (TransientError("throttled", status=429), Verdict.RETRY),
        (TransientError("server", status=503), Verdict.RETRY),
        (TransientError("connection failed"), Verdict.RETRY),
        (IntegrityError("too long", status=200), Verdict.RETRY),
        (DiskSpaceError("full"), Verdict.RETRY),
        (RetryLaterError("conversion failed", status=500), Verdict.RETRY),
    ],
)
def test_an_error_stands_for_one_outcome(error: DocumentError, verdict: Verdict) -> None:
    """A transient 4xx asks for a fresh target; keeping the target is for 5xx, 429, I/O."""
    outcome = Outcome.of(error)
    assert outcome.verdict is verdict
    assert outcome.failure() is error


@pytest.mark.parametrize(
    ("outcome", "status", "accepted"),
    [
        (Outcome.content(), 200, True),
        (Outcome.renew(URL, 401), 401, False),
        (Outcome.renew(URL, 403), 200, False),  # a refusal in the body of a 200
        (Outcome.of(PermanentError("gone", status=404)), 404, True),
        (Outcome.of(PermanentError("envelope", status=437)), 200, True),
        (Outcome.of(TransientError("busy", status=503)), 503, None),
        (Outcome.of(TransientError("envelope", status=500)), 200, None),
        (Outcome.of(TransientError("throttled", status=429)), 429, None),
    ],
)
def test_an_answer_tells_whether_the_token_was_accepted(
    outcome: Outcome, status: int, accepted: bool | None
) -> None:
    """Anything but a refusal proves the token, except answers that may precede the check."""
    assert token_verdict(outcome, status) is accepted


def test_judge_turns_a_raising_check_into_outcomes() -> None:
    """A check written as a chain of raises is content exactly when it does not raise."""
    assert judge(raise_for_status, head(200)).verdict is Verdict.CONTENT
    assert judge(raise_for_status, head(404)).verdict is Verdict.FAIL
    assert judge(raise_for_status, head(204)).verdict is Verdict.SKIP


async def test_peek_reads_across_short_reads_and_keeps_what_it_read_for_the_stream() -> None:
    """A check may read the start of a body; the bytes stay as the content's prefix."""
    chunks = [b'{"status', b'Code": 4', b"03}", b"tail"]

    async def read(limit: int) -> bytes:
        return chunks.pop(0)[:limit] if chunks else b""

    answer = Answer(head(200), read)
    assert await answer.peek(19) == b'{"statusCode": 403}'
    assert await answer.peek(19) == b'{"statusCode": 403}'  # read once
    assert answer.prefix == b'{"statusCode": 403}'
    assert chunks == [b"tail"]  # the rest is left for the stream
    assert await Answer.of(head(200), b"short").peek(64) == b"short"


def test_an_authorized_target_carries_its_credential_as_the_header() -> None:
    """The first hop sends the credential's header; the target keeps it to settle and renew."""

    class Fixed:
        header = "Bearer t"

        async def ready(self) -> None:
            return None

        def settle(self, accepted: bool | None) -> None:
            return None

    credential = Fixed()
    target = DownloadTarget.authorized(URL, credential, {"Accept": "application/pdf"})
    assert dict(target.headers) == {"Accept": "application/pdf", "Authorization": "Bearer t"}
    assert target.credential is credential
