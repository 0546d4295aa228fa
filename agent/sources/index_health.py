"""Index Health: client-token auth, per-collection listing, presigned or direct downloads.

The API reports errors through `statusCode` (or `status`) in the response BODY, and may or
may not repeat it as the HTTP status, so every answer is read as an envelope first
(`read_envelope`) and its body status decides (`document_error`).

Choices made here (the documentation leaves them open):

- Token lifetime is undocumented: a token is kept until the API refuses it (HTTP 401/403,
  or a body `statusCode` 401/403 with HTTP 200), then renewed as `TokenAuth` says: as
  often as tokens keep working for someone; a token refused before it ever worked, right
  after it was issued for a refused one, means the credentials are rejected.
- Fingerprint: `fingerprint` from the configuration, else a uuid4 generated on first use
  and kept in the state cursor `fingerprint`, so the agent is one stable device forever.
- Folder: the collection's name (`collection_name`), or its id when the API gives none.
  When two collections listed in one pass share a name, each of them gets the folder
  `"<name> (<collection id>)"` so that their files never collide.
- File name: `document_name`, plus the extension of `document_file_path` when the name has
  none. The Content-Disposition name is only known at download time and the source
  interface has no hook to rename afterwards; the server builds that header from the
  same two fields, so both agree.
- Direct downloads (`GET /download/{id}`): `check_download` reads the start of any answer
  that may be an error envelope and maps one like any other call (a body 401/403 renews
  the token); a document that is no envelope is the content. The Content-Type of an error
  is not documented and a handler that set the file's headers before it failed sends the
  envelope typed as the file, so only a 206 or a declared length past `JSON_PEEK` (an
  envelope is small) is taken as bytes unread.
- Presigned downloads: a 401/403 from the storage host (another origin) is an expired or
  refused signature -> fetch a fresh target, which asks the API for a fresh URL.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote, urlsplit

from msgspec.structs import asdict

from agent.config import IndexHealthSettings
from agent.errors import (
    AuthenticationError,
    DocumentError,
    ExpiredUrlError,
    FatalSourceError,
    PermanentError,
    SkipDocument,
    TransientError,
)
from agent.models import RemoteDocument
from agent.sources.auth import Grant, TokenAuth, read_grant
from agent.sources.base import BaseSource, SourceContext
from agent.sources.http import ApiResponse
from agent.sources.vendor import header, parse_date, text
from agent.transfer.contract import (
    TRANSIENT_STATUSES,
    Answer,
    DownloadTarget,
    Outcome,
    ResponseHead,
    judge,
    raise_for_status,
)

TOKEN_LIFETIME: Final = 10 * 365 * 86400.0  # undocumented: valid until the API refuses it
FINGERPRINT_CURSOR: Final = "fingerprint"
URL_ONLY: Final = "url-only document"
NO_FILE: Final = "no file uploaded"
JSON_PEEK: Final = 64 * 1024  # an error envelope is small; a longer JSON body is a document
_EXTENSION_RE: Final = re.compile(r"\.[A-Za-z0-9]{1,5}$")
_MESSAGE_MAX: Final = 200


# --------------------------------------------------------------------------- pure helpers


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """An API answer as `{statusCode|status, data, message}`, whatever the HTTP status."""

    status: int
    message: str
    data: Any


def _body_status(body: Mapping[str, Any]) -> int | None:
    for key in ("statusCode", "status"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
    return None


def read_envelope(http_status: int, body: bytes | None) -> Envelope:
    """The body's status when it carries one, else the HTTP status."""
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return Envelope(http_status, "", parsed)
    status = _body_status(parsed)
    message = parsed.get("message")
    return Envelope(
        http_status if status is None else status,
        message[:_MESSAGE_MAX] if isinstance(message, str) else "",
        parsed.get("data") if "data" in parsed else parsed,
    )


def error_envelope(status: int, body: bytes) -> Envelope | None:
    """The API error envelope a download response carries, or None (bytes, or not the API's).

    Only a JSON object with a numeric status and a string `message` counts, so that a JSON
    document that happens to be downloaded is never mistaken for an error.
    """
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("message"), str):
        return None
    if _body_status(parsed) is None:
        return None
    return read_envelope(status, body)


def may_be_envelope(head: ResponseHead) -> bool:
    """Whether a direct download's answer may be an error envelope, whatever its type."""
    if head.status == 206:
        return False
    length = header(head.headers, "Content-Length")
    return length is None or not length.strip().isdigit() or int(length) <= JSON_PEEK


def is_unauthorized(status: int) -> bool:
    return status in (401, 403)


def document_error(envelope: Envelope, *, url: str | None = None) -> DocumentError:
    """What a non-200 body status means for one document (403 is handled by the caller)."""
    status, message = envelope.status, envelope.message
    if status == 435 and "no file path" in message.lower():
        return SkipDocument(URL_ONLY, url=url)
    if status == 437 or status in (404, 410):
        return PermanentError("document not found", url=url, status=status)
    if status in TRANSIENT_STATUSES or 500 <= status < 600:
        return TransientError(message or "server error", url=url, status=status)
    return PermanentError(message or "the API refused the request", url=url, status=status)


def file_name(name: str, file_path: str | None) -> str:
    """`document_name`, with the file path's extension added when the name has none."""
    if _EXTENSION_RE.search(name) or not file_path:
        return name
    extension = _EXTENSION_RE.search(file_path.rsplit("/", 1)[-1])
    return name + extension.group(0).lower() if extension else name


def collection_folders(names: Mapping[str, str | None]) -> dict[str, str]:
    """Folder per collection id: its name, or `name (id)` when names collide, or the id."""
    counts: dict[str, int] = {}
    for name in names.values():
        if name:
            counts[name] = counts.get(name, 0) + 1
    folders: dict[str, str] = {}
    for collection_id, name in names.items():
        if not name:
            folders[collection_id] = collection_id
        elif counts[name] > 1:
            folders[collection_id] = f"{name} ({collection_id})"
        else:
            folders[collection_id] = name
    return folders


def distinct_collections(plans: object) -> list[str]:
    """Distinct `collection_id`s of a `/get-plans` answer, in order of first appearance."""
    seen: dict[str, None] = {}
    for plan in plans if isinstance(plans, list) else ():
        if isinstance(plan, dict) and isinstance(plan.get("collection_id"), str | int):
            seen.setdefault(str(plan["collection_id"]), None)
    return list(seen)


def describe_details(item: Mapping[str, Any]) -> dict[str, Any]:
    """The agent's own metadata keys for a `/get-document-details` answer."""
    plans = item.get("associated_plans")
    tags = item.get("document_tags")
    return {
        "description": item.get("document_description"),
        "type": item.get("document_type"),
        "priority": item.get("document_priority"),
        "tags": [str(tag) for tag in tags] if isinstance(tags, list) else [],
        "collection": item.get("collection_name"),
        "collection_id": item.get("collection_id"),
        "plans": [
            {"id": plan.get("plan_id"), "name": plan.get("plan_name"), "color": plan.get("color")}
            for plan in (plans if isinstance(plans, list) else ())
            if isinstance(plan, dict)
        ],
        "url": item.get("document_url"),
        "created": item.get("created_at"),
        "updated": item.get("updated_at"),
    }


def envelope_check(response: ApiResponse) -> Outcome:
    """An API answer judged by its envelope: the data, a refused token, or an error."""
    envelope = read_envelope(response.status, response.body)
    if envelope.status == 200 and response.status < 300:
        return Outcome.content(envelope.data)
    if is_unauthorized(envelope.status):
        return Outcome.renew(response.url, envelope.status)
    return Outcome.of(document_error(envelope, url=response.url))


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


# --------------------------------------------------------------------------- auth


class IndexHealthAuth(TokenAuth):
    """`POST /generate-client-auth-token` with the client credentials, fingerprint and user."""

    renew_statuses = frozenset({401, 403})

    def __init__(self, ctx: SourceContext, settings: IndexHealthSettings) -> None:
        super().__init__(ctx.state, source=ctx.config.name, early=0.0, lifetime=TOKEN_LIFETIME)
        assert ctx.config.client_id is not None  # enforced by config
        assert ctx.config.client_secret is not None
        self.ctx = ctx
        self.settings = settings
        self.url = f"{ctx.config.base_url}/generate-client-auth-token"
        self._fingerprint = settings.fingerprint

    async def fingerprint(self) -> str:
        """The configured fingerprint, else the one generated once and kept in the state."""
        if self._fingerprint is None:
            saved = await self.ctx.state.load_cursor(FINGERPRINT_CURSOR)
            if not saved:
                saved = str(uuid.uuid4())
                await self.ctx.state.save_cursor(FINGERPRINT_CURSOR, saved)
            self._fingerprint = saved
        return self._fingerprint

    async def obtain(self) -> Grant:
        secret = self.ctx.config.client_secret
        assert secret is not None
        user = {k: v for k, v in asdict(self.settings.user).items() if v is not None}
        body = {
            "client_id": self.ctx.config.client_id,
            "client_secret": secret.reveal(),
            "fingerprint": await self.fingerprint(),
            "user": user,
        }
        response = await self.ctx.client.request("POST", self.url, json_body=body)
        envelope = read_envelope(response.status, response.body)
        if envelope.status != 200 or response.status >= 300:
            raise self._refusal(envelope, response)
        return read_grant(envelope.data, url=self.url)

    def _refusal(self, envelope: Envelope, response: ApiResponse) -> Exception:
        status = envelope.status if envelope.status != 200 else response.status
        said = f": {envelope.message}" if envelope.message else ""
        if status == 400:
            return AuthenticationError(
                self.source,
                f"the token endpoint refused the request{said} "
                f"(check client_id, fingerprint and [sources.user])",
            )
        if status in (401, 403):
            return AuthenticationError(
                self.source, f"the token endpoint rejected the client credentials{said}"
            )
        if status in TRANSIENT_STATUSES or status >= 500:
            return TransientError(f"token request failed{said}", url=self.url, status=status)
        return FatalSourceError(self.source, f"token request failed with status {status}{said}")


# --------------------------------------------------------------------------- source


class IndexHealthSource(BaseSource):
    """Lists each collection through `/get-documents`; downloads presigned or direct."""

    credential_cursors = frozenset({FINGERPRINT_CURSOR})  # the device the tokens belong to

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        self.settings = self.settings_of(IndexHealthSettings)
        self.auth = IndexHealthAuth(ctx, self.settings)

    # ----------------------------------------------------------------- API calls

    async def call(self, path: str, payload: Mapping[str, Any]) -> Any:
        """POST a JSON body and return the envelope's `data`, or raise what its status means.

        The client renews a refused token, retries a transient body status with back-off
        and raises what any other status means (`envelope_check`).
        """
        url = f"{self.base_url}{path}"
        response = await self.client.request(
            "POST", url, auth=self.auth, json_body=payload, check=envelope_check
        )
        return response.data

    async def _listing_call(self, path: str, payload: Mapping[str, Any]) -> Any:
        try:
            return await self.call(path, payload)
        except (PermanentError, SkipDocument) as exc:
            raise FatalSourceError(self.name, f"{path} failed: {exc}") from exc

    # ----------------------------------------------------------------- listing

    async def collection_ids(self) -> list[str]:
        """The configured collections, else every collection some plan belongs to."""
        if self.settings.collections is not None:
            return list(self.settings.collections)
        return distinct_collections(await self._listing_call("/get-plans", {}))

    async def list_documents(self) -> AsyncIterator[RemoteDocument]:
        listed: list[tuple[str, list[dict[str, Any]]]] = []
        names: dict[str, str | None] = {}
        for collection_id in await self.collection_ids():
            data = await self._listing_call("/get-documents", {"collection_id": collection_id})
            items = [i for i in data if isinstance(i, dict)] if isinstance(data, list) else []
            listed.append((collection_id, items))
            names[collection_id] = _collection_name(items)
        folders = collection_folders(names)
        for collection_id, items in listed:
            for item in items:
                doc = self._document(item, folders[collection_id])
                if doc is not None:
                    yield doc

    def _document(self, item: Mapping[str, Any], folder: str) -> RemoteDocument | None:
        doc_id = item.get("document_id")
        if not isinstance(doc_id, str | int) or isinstance(doc_id, bool) or doc_id == "":
            return None
        remote_id = str(doc_id)
        updated = str(item.get("updated_at") or item.get("created_at") or "")
        path = text(item.get("document_file_path"))
        url = text(item.get("document_url"))
        skip = None if path else URL_ONLY if url else NO_FILE
        return RemoteDocument(
            remote_id=remote_id,
            version=updated,
            name=file_name(text(item.get("document_name")) or remote_id, path),
            folder=(folder,),
            modified=parse_date(updated),
            locator=self._direct_url(remote_id),
            skip_reason=skip,
            external_url=url if skip == URL_ONLY else None,
        )

    def _direct_url(self, remote_id: str) -> str:
        return f"{self.base_url}/download/{quote(remote_id, safe='')}"

    # ----------------------------------------------------------------- downloads

    async def download_target(
        self, doc: RemoteDocument, attrs: Mapping[str, str]
    ) -> DownloadTarget:
        if self.settings.download_method == "direct":
            url = self._direct_url(doc.remote_id)
            return DownloadTarget.authorized(url, await self.auth.lease())
        data = await self.call("/download", {"document_id": doc.remote_id})
        link = data.get("download_url") if isinstance(data, dict) else None
        if not isinstance(link, str) or not link:
            raise TransientError("the API gave no download_url", url=f"{self.base_url}/download")
        return DownloadTarget(link, paced=False)

    async def check_download(self, answer: Answer) -> Outcome:
        head = answer.head
        if _origin(head.url) != _origin(self.base_url):  # a presigned URL's storage host
            if is_unauthorized(head.status):
                refused = "the storage host refused the URL"
                return Outcome.of(ExpiredUrlError(refused, url=head.url, status=head.status))
            return judge(raise_for_status, head)
        envelope = None
        if may_be_envelope(head):
            envelope = error_envelope(head.status, await answer.peek(JSON_PEEK))
        if envelope is None or envelope.status == 200:
            return judge(raise_for_status, head)  # the document's bytes, JSON or not
        if is_unauthorized(envelope.status):
            return Outcome.renew(head.url, envelope.status)
        return Outcome.of(document_error(envelope, url=head.url))

    # ----------------------------------------------------------------- metadata

    async def describe(self, doc: RemoteDocument) -> Mapping[str, Any] | None:
        data = await self.call("/get-document-details", {"document_id": doc.remote_id})
        if not isinstance(data, dict):
            raise TransientError("document details are not a JSON object")
        return describe_details(data)


def _collection_name(items: Sequence[Mapping[str, Any]]) -> str | None:
    for item in items:
        name = text(item.get("collection_name"))
        if name:
            return name
    return None
