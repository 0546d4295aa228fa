"""The one exception tree of sync-agent, split by what the caller can do about an error.

    AgentError
     +-- ConfigError              bad configuration; names the key (exit 78)
     +-- FatalSourceError         the source cannot run at all this pass
     |    +-- AuthenticationError credentials rejected or revoked (exit 77)
     +-- DocumentError            one document failed; the others go on
     |    +-- TransientError      try again soon (network, 5xx, 429, 409, truncated body)
     |    |    +-- ExpiredUrlError    the signed URL expired: ask the API for a new one
     |    |    +-- IntegrityError     the bytes did not match what was promised
     |    |    +-- DiskSpaceError     the disk is (nearly) full; the partial is kept
     |    |    +-- RetryLaterError    not within this pass (a conversion failed or is slow)
     |    +-- PermanentError      retry only on a slow schedule (not found, forbidden, gone)
     |    +-- SkipDocument        nothing to download by design (URL-only, no permission)
     +-- StateError               the state database is unusable
     |    +-- CorruptStateError   its file is damaged: set aside and rebuilt at the next start
     +-- AlreadyRunningError      another daemon holds the state folder's lock
     +-- LeaseLostError           another replica took over a job or pass this one held
     +-- MirrorError              the mirror folder cannot be read or written (exit 74)

Exceptions carry structured fields and a readable `__str__`; URLs never include their query
string (signatures) and no message ever contains a secret.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_AUTH = 77
EXIT_CONFIG = 78
EXIT_STATE = 74  # EX_IOERR: the state database cannot be used (a damaged one: restart rebuilds)


def safe_url(url: str | None) -> str:
    """The URL without query, fragment or user info: what may appear in logs and errors."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def describe_error(exc: DocumentError) -> str:
    """A one-line description for logs and the state database (no secrets, no signatures)."""
    return f"{exc.kind}: {exc}" if exc.url else f"{exc.kind}: {exc.message}"


class AgentError(Exception):
    """Root of every error sync-agent raises on purpose."""


class ConfigError(AgentError):
    """The configuration is wrong; `key` names the offending setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


class FatalSourceError(AgentError):
    """The source cannot be synchronised until someone acts; other sources go on."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class AuthenticationError(FatalSourceError):
    """The remote rejected our credentials or refresh token."""


class StateError(AgentError):
    """The state database cannot be opened, migrated or used."""


class AlreadyRunningError(AgentError):
    """Another instance already owns this state folder."""


class LeaseLostError(AgentError):
    """A lease this replica held (a download job, a source's pass) is no longer its own.

    Its lease expired (the replica stalled past it) and another replica took the work over:
    whatever this replica was doing with it stops, and nothing of it is committed.
    """


class MirrorError(AgentError):
    """The mirror folder cannot be read or written (permissions, a full or lost volume)."""


class DocumentError(AgentError):
    """A problem with one document; the pass carries on with the others."""

    kind = "error"

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        self.message = message
        self.url = safe_url(url)
        self.status = status
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.url:
            parts.append(self.url)
        return " | ".join(parts)


class TransientError(DocumentError):
    """Worth retrying soon, with backoff."""

    kind = "transient"


class ExpiredUrlError(TransientError):
    """The storage host refused a signed URL (expired or invalid signature)."""

    kind = "expired-url"


class IntegrityError(TransientError):
    """Byte count or checksum did not match; the bytes were discarded."""

    kind = "integrity"


class DiskSpaceError(TransientError):
    """Not enough free space; what was written so far is kept for a later resume."""

    kind = "disk-space"


class RetryLaterError(TransientError):
    """Worth another try on a later pass, not within this one."""

    kind = "retry-later"


class PermanentError(DocumentError):
    """Will not succeed by retrying soon; retried only on a slow schedule."""

    kind = "permanent"


class SkipDocument(DocumentError):
    """The document has nothing to download by design; recorded, never retried."""

    kind = "skipped"

    def __init__(self, reason: str, *, url: str | None = None, external_url: str | None = None):
        self.external_url = external_url
        super().__init__(reason, url=url)


class CorruptStateError(StateError):
    """The SQLite state file is damaged (malformed, or not a database at all).

    The opener that holds the instance lock sets it aside and starts a fresh one; found
    during a pass, it fails the pass and the next start does so.
    """

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(
            f"the state database {where} is damaged ({reason}): the next `sync-agent sync` "
            "or `sync-agent run` sets it aside and starts a fresh one"
        )
        self.where = where
        self.reason = reason
