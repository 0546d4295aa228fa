"""Huddle sandbox document content: bytes, ranges, validators, conversions, storage redirects.

`GET /files/documents/{id}/content` with no `Accept` (or `*/*`, or the original type) gives
the original bytes. Another type in `Accept` or `?mimetype=` is negotiated against the
document's supported conversions: a finished rendition is served, an unstarted one answers
202 with a progress resource in `Location`, an unsupported type 406. A finished conversion
names its content link in the progress body (the JSON example) or only in a `Link` header
(the sequence diagram), as `conversion_links_in_body` chooses. Range requests are
single-range: malformed or multi-range headers are ignored (200), a range starting past
the end is 416.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote, unquote

from aiohttp import web

from agent.sandbox.huddle_http import (
    HuddleOptions,
    content_disposition,
    error,
    http_date,
    if_range_holds,
    not_modified,
    parse_range,
    requested_type,
    valid_download_reason,
)
from agent.sandbox.huddle_model import Document, HuddleTree
from agent.sandbox.server import json_body
from agent.sandbox.storage import StorageHost

IN_PROGRESS = "InProgress"
COMPLETE = "Complete"
FAILED = "Failed"
STORAGE_PREFIX = "huddle"
SIGNED_URL_TTL = 3600.0


@dataclass
class ConversionJob:
    doc_id: str
    mime: str
    polls_left: int
    status: str = IN_PROGRESS


class Conversions:
    """Conversion jobs per (version id, target type), and which conversions are set to fail."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], ConversionJob] = {}
        self.failing: set[tuple[str, str]] = set()

    def ready(self, version_id: str, mime: str) -> bool:
        job = self.jobs.get((version_id, mime))
        return job is not None and job.status == COMPLETE

    def start(self, doc_id: str, version_id: str, mime: str, polls: int) -> None:
        """Start a job unless one is running or done; a failed one starts again."""
        job = self.jobs.get((version_id, mime))
        if job is None or job.status == FAILED:
            self.jobs[(version_id, mime)] = ConversionJob(doc_id, mime, polls)

    def complete(self, doc_id: str, version_id: str, mime: str) -> None:
        self.jobs[(version_id, mime)] = ConversionJob(doc_id, mime, 0, COMPLETE)

    def poll(self, version_id: str, mime: str) -> ConversionJob | None:
        """One look at a job: counts down its polls, then settles it."""
        job = self.jobs.get((version_id, mime))
        if job is None or job.status != IN_PROGRESS:
            return job
        if job.polls_left > 0:
            job.polls_left -= 1
        else:
            job.status = FAILED if (job.doc_id, job.mime) in self.failing else COMPLETE
        return job


@dataclass(frozen=True, slots=True)
class Rendition:
    """One servable body of a document: the original or a conversion."""

    data: bytes
    content_type: str
    filename: str
    etag: str
    storage_key: str


def original(doc: Document) -> Rendition:
    key = f"{STORAGE_PREFIX}/{doc.id}/{doc.version_id}"
    return Rendition(doc.data, doc.mime, doc.filename, f'"{doc.version_id}"', key)


def converted(doc: Document, mime: str) -> Rendition:
    """A deterministic stand-in for a conversion of the current version to `mime`."""
    prefix = b"%PDF-sandbox " if mime == "application/pdf" else f"converted {mime}\n".encode()
    extension = mimetypes.guess_extension(mime) or ""
    filename = (
        str(PurePosixPath(doc.filename).with_suffix(extension)) if extension else doc.filename
    )
    slug = mime.replace("/", "-").replace('"', "")
    key = f"{STORAGE_PREFIX}/{doc.id}/{doc.version_id}/{slug}"
    return Rendition(prefix + doc.data, mime, filename, f'"{doc.version_id}-{slug}"', key)


def supported_accept(doc: Document) -> str:
    return ", ".join(dict.fromkeys([doc.mime, *doc.supported]))


def conversion_path(doc: Document, mime: str, version_id: str | None = None) -> str:
    version = version_id or doc.version_id
    return f"/files/documents/{doc.id}/versions/{version}/conversion/{quote(mime, safe='')}"


class ContentService:
    """Handlers for the content and conversion-progress resources."""

    def __init__(
        self,
        tree: HuddleTree,
        storage: StorageHost,
        options: HuddleOptions,
        conversions: Conversions,
        download_reasons: list[tuple[str, str | None]],
    ) -> None:
        self.tree = tree
        self.storage = storage
        self.options = options
        self.conversions = conversions
        self.download_reasons = download_reasons

    async def content(self, request: web.Request) -> web.StreamResponse:
        doc_id = request.match_info["doc_id"]
        reason = request.headers.get("x-download-reason")
        self.download_reasons.append((doc_id, reason))
        if reason is not None and not valid_download_reason(reason):
            return error(400, f"Unsupported x-download-reason: {reason[:120]}")
        doc = self.tree.documents.get(doc_id)
        refusal = self._refusal(doc)
        if refusal is not None or doc is None:
            return refusal or error(404, "Document not found")
        negotiation = {"Supported-Accept": supported_accept(doc), "Vary": "Accept"}
        wanted = requested_type(request.query.get("mimetype"), request.headers.get("Accept"))
        if wanted is None or wanted == doc.mime.lower():
            return self._deliver(request, doc, original(doc), negotiation)
        if wanted not in (m.lower() for m in doc.supported):
            return error(406, f"Cannot convert this document to {wanted}", negotiation)
        if self.conversions.ready(doc.version_id, wanted):
            return self._deliver(request, doc, converted(doc, wanted), negotiation)
        self.conversions.start(doc.id, doc.version_id, wanted, self.options.conversion_polls)
        location = str(request.url.origin()) + conversion_path(doc, wanted)
        return web.Response(status=202, headers={**negotiation, "Location": location})

    def _refusal(self, doc: Document | None) -> web.Response | None:
        if doc is None:
            return error(404, "Document not found")
        if self.tree.document_gone(doc):
            return error(410, "Document has been deleted")
        if not doc.downloadable:
            return error(403, "You do not have permission to download this document")
        if doc.moving:
            return error(409, "The document is being moved")
        if not doc.has_content:
            if self.options.no_content_status == 204:
                return web.Response(status=204)
            return error(404, "The document has no content")
        return None

    def _deliver(
        self,
        request: web.Request,
        doc: Document,
        body: Rendition,
        negotiation: dict[str, str],
    ) -> web.Response:
        self.tree.observe(doc.updated)
        validators = {"ETag": body.etag, "Last-Modified": http_date(doc.updated)}
        if not_modified(request.headers, body.etag, doc.updated):
            return web.Response(status=304, headers={**negotiation, **validators})
        if self.options.content_redirect:
            return self._redirect(body, negotiation)
        headers = {
            **negotiation,
            **validators,
            "Content-Type": body.content_type,
            "Content-Disposition": content_disposition(body.filename),
            "Accept-Ranges": "bytes",
        }
        size = len(body.data)
        wanted = None
        if if_range_holds(request.headers.get("If-Range"), body.etag, doc.updated):
            wanted = parse_range(request.headers.get("Range"), size)
        if wanted is None:
            return web.Response(body=body.data, headers=headers)
        if not wanted.satisfiable:
            return web.Response(
                status=416, headers={**negotiation, "Content-Range": f"bytes */{size}"}
            )
        headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{size}"
        return web.Response(
            status=206, body=body.data[wanted.start : wanted.end + 1], headers=headers
        )

    def _redirect(self, body: Rendition, negotiation: dict[str, str]) -> web.Response:
        if body.storage_key not in self.storage.blobs:
            self.storage.put(
                body.storage_key, body.data, content_type=body.content_type, filename=body.filename
            )
        location = self.storage.sign(body.storage_key, SIGNED_URL_TTL)
        return web.Response(status=302, headers={**negotiation, "Location": location})

    async def conversion(self, request: web.Request) -> web.Response:
        doc_id, version_id = request.match_info["doc_id"], request.match_info["version_id"]
        mime = unquote(request.match_info["mime"]).lower()
        doc = self.tree.documents.get(doc_id)
        job = None
        if doc is not None and self.tree.version_owner.get(version_id) == doc_id:
            job = self.conversions.poll(version_id, mime)
        if doc is None or job is None:
            return json_body({"message": "No such conversion"}, 404)
        base = str(request.url.origin())
        content = f"{base}/files/documents/{doc.id}/content"
        body: dict[str, object] = {"status": job.status}
        headers = {}
        if self.options.conversion_links_in_body:
            body["links"] = [
                {"rel": "self", "href": base + conversion_path(doc, mime, version_id)},
                {"rel": "content", "href": content},
            ]
        elif job.status == COMPLETE:
            headers["Link"] = f'<{content}>; rel="content"'
        if job.status == FAILED:
            body["message"] = f"Conversion of {doc.filename} to {mime} failed"
            return json_body(body, 500)
        return json_body(body, headers=headers)
