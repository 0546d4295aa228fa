"""Each documented Index Health ambiguity has a knob; the defaults are the least reading."""

from __future__ import annotations

import pytest
from index_health_kit import add_report, api, auth_body

from agent.sandbox.index_health_tokens import Outcome, TokenLedger


async def test_a_default_token_dies_after_five_calls_with_403_unauthorized_in_the_body() -> None:
    """Undocumented lifetime, least reading: a few calls; errors arrive as HTTP 200."""
    async with api(minimal=True) as a:
        token = await a.token()
        statuses = [await a.post("/get-plans", {}, token) for _ in range(6)]
        assert [body["statusCode"] for _, body in statuses] == [200] * 5 + [403]
        assert statuses[-1] == (200, {"statusCode": 403, "data": {}, "message": "UNAUTHORIZED"})
        assert (await a.post("/get-plans", {}, await a.token()))[1]["statusCode"] == 200


async def test_a_default_token_also_dies_after_ten_seconds() -> None:
    """Whichever comes first: a token unused for ten seconds is refused too."""
    async with api(minimal=True) as a:
        token = await a.token()
        a.clock.now += 9.9
        assert (await a.post("/get-plans", {}, token))[1]["statusCode"] == 200
        a.clock.now += 0.1
        assert (await a.post("/get-plans", {}, token))[1]["statusCode"] == 403


async def test_the_ledger_names_a_task_refused_twice_without_a_renewal_between() -> None:
    """Refused, renewed, refused again is fine; refused and refused again is recorded."""
    async with api(minimal=True, token_uses=1) as a:
        _, doc = add_report(a.sandbox)
        first = await a.token()
        for _ in range(2):  # the first works, the second is refused
            await a.post("/download", {"document_id": doc}, first)
        renewed = await a.token()
        await a.post("/get-plans", {}, renewed)  # someone else spends the new token
        await a.post("/download", {"document_id": doc}, renewed)
        assert a.sandbox.token_ledger.refused_twice_without_renewal() == []
        await a.post("/download", {"document_id": doc}, renewed)  # the same dead token again
        assert a.sandbox.token_ledger.refused_twice_without_renewal() == [f"download:{doc}"]
        assert a.sandbox.token_ledger.refusals == 3


def test_ledger_tasks_are_judged_apart() -> None:
    """Two tasks each refused once in a row are not one task refused twice."""
    ledger = TokenLedger()
    ledger.note_issue()
    ledger.note_call("download:a", Outcome.REFUSED, 1)
    ledger.note_call("download:b", Outcome.REFUSED, 1)
    ledger.note_call("download:a", Outcome.ACCEPTED, 1)
    assert ledger.refused_twice_without_renewal() == []


async def test_revoked_client_credentials_are_refused_by_the_token_endpoint() -> None:
    """After a revocation every token dies and a new one is refused with 401."""
    async with api(minimal=True) as a:
        token = await a.token()
        a.sandbox.revoke_client_credentials()
        assert (await a.post("/get-plans", {}, token))[1]["statusCode"] == 403
        status, body = await a.post("/generate-client-auth-token", auth_body())
        assert (status, body["statusCode"], body["message"]) == (
            200,
            401,
            "Invalid client credentials",
        )


@pytest.mark.parametrize(
    ("reading", "expected"),
    [
        (
            "omitted",
            {
                "document_description",
                "document_type",
                "document_priority",
                "document_tags",
                "collection_name",
                "avg_progress",
                "document_url",
            },
        ),
        ("present", {"document_url", "document_description", "document_priority"}),
        ("null", set()),
    ],
)
async def test_optional_fields_are_omitted_present_when_set_or_null(
    reading: str, expected: set[str]
) -> None:
    """The listing's optional fields in each reading (`expected`: the ones left out)."""
    async with api(minimal=True, optional_fields=reading) as a:
        collection, _ = add_report(a.sandbox)
        _, body = await a.post("/get-documents", {"collection_id": collection}, await a.token())
        (item,) = body["data"]
        everything = {
            "document_id",
            "document_name",
            "document_description",
            "document_type",
            "document_priority",
            "collection_id",
            "document_file_path",
            "document_url",
            "document_tags",
            "created_at",
            "updated_at",
            "collection_name",
            "avg_progress",
        }
        assert everything - set(item) == expected
        assert item["document_file_path"] == "docs/q3.pdf"  # it tells a file from a URL
        if reading == "null":
            assert item["document_url"] is None


@pytest.mark.parametrize(("minimal", "expected"), [(True, "application/pdf"), (False, "json")])
async def test_a_direct_download_error_is_typed_as_the_file_by_default(
    minimal: bool, expected: str
) -> None:
    """Undocumented error Content-Type, least reading: the file's own, as a handler set it."""
    async with api(minimal=minimal) as a:
        _, doc = add_report(a.sandbox)
        a.sandbox.fail_document(doc, 500)
        status, body, headers = await a.get(f"/download/{doc}", await a.token())
        assert b'"statusCode":500' in body
        assert expected in headers["Content-Type"]
        assert status == (200 if minimal else 500)
