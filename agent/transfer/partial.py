"""A staging file being filled: what its bytes are, and how a resumed request continues them.

A resume asks `Range: bytes=<offset>-` guarded by `If-Range: <validator>`; the answer is
reconciled here: a 206 must start at our offset, a 200 means start over, and the size the
listing promised must match the size the server sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import IntegrityError
from agent.models import Fetched, JobSpec, RemoteDocument
from agent.transfer import digests
from agent.transfer.contract import ResponseHead
from agent.transfer.digests import Algorithm, Hasher

CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class Restart(Exception):
    """The partial cannot be continued: discard it and start from byte zero."""


@dataclass
class Partial:
    """The staging file and what is known about its bytes, hashed with `algorithm`."""

    path: Path
    algorithm: Algorithm
    offset: int = 0
    validator: str | None = None
    digest: Hasher = field(init=False)

    def __post_init__(self) -> None:
        self.digest = digests.new(self.algorithm)

    @classmethod
    async def resume(cls, staging: Path, job: JobSpec, algorithm: Algorithm) -> Partial:
        """The job's staging file with the bytes a previous attempt or process left.

        A file verified before a crash is hashed again with the algorithm it was verified
        with, so that it is recognised whatever the configuration says now.
        """
        if job.digest:
            algorithm = digests.algorithm_of(job.digest)
        partial = cls(staging / job.temp_name, algorithm)
        if (job.validator or job.digest) and partial.path.exists():
            digest, size = await asyncio.to_thread(digests.hash_file, partial.path, algorithm)
            partial.offset, partial.digest, partial.validator = size, digest, job.validator
        # otherwise start from zero: the first write truncates whatever a crash left there
        return partial

    def value(self) -> str:
        """The recorded form of the digest of the bytes so far."""
        return digests.value(self.algorithm, self.digest)

    def reset(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.offset, self.validator, self.digest = 0, None, digests.new(self.algorithm)

    def range_headers(self) -> dict[str, str]:
        if self.offset <= 0:
            return {}
        headers = {"Range": f"bytes={self.offset}-"}
        if self.validator:
            headers["If-Range"] = self.validator
        return headers

    def accept(self, response: ResponseHead) -> int | None:
        """Reconcile the answer with the bytes kept; returns the full size when known."""
        if response.status == 206:
            match = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != self.offset:
                raise Restart
            return None if match.group(3) == "*" else int(match.group(3))
        if self.offset:
            self.reset()  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None

    def take_validator(self, response: ResponseHead) -> None:
        """Keep the answer's validator; a changed one means the resource changed under us."""
        validator = _validator(response)
        if self.offset and self.validator and validator and validator != self.validator:
            raise Restart
        self.validator = validator or self.validator

    def fetched(self) -> Fetched:
        return Fetched(
            temp_path=str(self.path),
            size=self.offset,
            digest=self.value(),
            validator=self.validator,
        )


def _validator(response: ResponseHead) -> str | None:
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def expected_size(doc: RemoteDocument, job: JobSpec, total: int | None) -> int | None:
    """The size to verify against: the server's, which must match the listing's promise."""
    promised = doc.size if doc.size is not None else job.expected_size
    if promised is not None and total is not None and promised != total:
        raise IntegrityError(f"the listing promised {promised} bytes, the server sends {total}")
    return total if total is not None else promised
