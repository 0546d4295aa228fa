"""The state database's tables (portable SQL: SQLite by default, PostgreSQL works too).

Times are stored as epoch seconds (floats) so every backend compares them the same way.
Vendor strings (remote ids, versions) are unbounded on PostgreSQL, which enforces VARCHAR
lengths where SQLite does not. `path_key` is a mirror path casefolded by Python (SQL's
lower() folds ASCII only), so a path is claimed the same way on every file system.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


VENDOR_STRING = String(512).with_variant(Text(), "postgresql")
DIGEST_LENGTH = 80  # "<algorithm>:<hex>", e.g. "blake3:" and 64 hex digits
# The shared request budget lives on PostgreSQL only (SQLite has one process and keeps its
# budget in memory); the table exists on both so that one schema serves both.
GRANT_TIMES = Text().with_variant(ARRAY(Float()), "postgresql")
GRANT_COUNTS = Text().with_variant(ARRAY(Integer()), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class SourceRow(Base):
    """One configured source and how its last pass went."""

    __tablename__ = "sources"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    last_pass_started: Mapped[float | None] = mapped_column(Float)
    last_pass_finished: Mapped[float | None] = mapped_column(Float)
    last_pass_ok: Mapped[bool | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_warning: Mapped[str | None] = mapped_column(Text)  # what a pass that went well said


class DocumentRow(Base):
    """A remote document and where it stands in the mirror."""

    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("source", "remote_id"),
        Index("ix_documents_path", "source", "path_key"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(64), index=True)
    remote_id: Mapped[str] = mapped_column(VENDOR_STRING)
    version: Mapped[str] = mapped_column(VENDOR_STRING)
    name: Mapped[str] = mapped_column(Text)
    rel_path: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    digest: Mapped[str | None] = mapped_column(String(DIGEST_LENGTH))  # "<algorithm>:<hex>"
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    external_url: Mapped[str | None] = mapped_column(Text)
    metadata_json: Mapped[str | None] = mapped_column(Text)
    metadata_hash: Mapped[str | None] = mapped_column(String(64))
    prune: Mapped[bool] = mapped_column(default=False, server_default="0")
    path_key: Mapped[str | None] = mapped_column(Text)  # rel_path casefolded
    updated_at: Mapped[float] = mapped_column(Float)


class JobRow(Base):
    """A download queued, leased to a replica, or waiting to be retried; survives restarts.

    The lease: `owner` (a replica id) holds the job until `lease_until`; `attempt` counts
    the claims and fences every write of the holder (see `agent.state.jobs`). `attempts`
    counts failed tries, for the back-off. Ids are never reused (AUTOINCREMENT on SQLite, a
    sequence on PostgreSQL), so a fence never matches a later job. `temp_name` names the
    staging file that holds the bytes persisted so far (`bytes_done`, `validator`).
    """

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("source", "remote_id"),
        Index("ix_jobs_claim", "state", "id"),
        Index("ix_jobs_path", "source", "path_key"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(64), index=True)
    remote_id: Mapped[str] = mapped_column(VENDOR_STRING)
    version: Mapped[str] = mapped_column(VENDOR_STRING)
    rel_path: Mapped[str] = mapped_column(Text)
    attrs_json: Mapped[str] = mapped_column(Text, default="{}")
    doc_json: Mapped[str | None] = mapped_column(Text)  # the listed document, for any replica
    path_key: Mapped[str | None] = mapped_column(Text)  # rel_path casefolded
    state: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[float | None] = mapped_column(Float)
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    expected_size: Mapped[int | None] = mapped_column(BigInteger)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    validator: Mapped[str | None] = mapped_column(Text)
    temp_name: Mapped[str] = mapped_column(Text)
    digest: Mapped[str | None] = mapped_column(String(DIGEST_LENGTH))  # set once verified
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    next_retry_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class PassLeaseRow(Base):
    """Which replica lists and plans a source right now, and until when (one row a source)."""

    __tablename__ = "pass_leases"
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[float | None] = mapped_column(Float)
    taken_at: Mapped[float | None] = mapped_column(Float)
    # held by `verify --repair`: no replica works the source's jobs meanwhile either
    repair: Mapped[bool] = mapped_column(default=False, server_default="0")


class TokenRow(Base):
    """Tokens the agent obtained (encrypted at rest); rotated refresh tokens keep history."""

    __tablename__ = "tokens"
    __table_args__ = (Index("ix_tokens_source_kind", "source", "kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


class CursorRow(Base):
    """Listing cursors and other small facts a source keeps between passes."""

    __tablename__ = "cursors"
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float)


class EventRow(Base):
    """One entry of the change journal (`agent.state.journal`): what changed in the mirror.

    `seq` never repeats (AUTOINCREMENT on SQLite, an identity on PostgreSQL) and is taken
    in commit order; `data` is JSON with the fields a type adds.
    """

    __tablename__ = "events"
    __table_args__ = ({"sqlite_autoincrement": True},)
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(64))
    document_id: Mapped[str | None] = mapped_column(VENDOR_STRING)
    version: Mapped[str | None] = mapped_column(VENDOR_STRING)
    path: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    digest: Mapped[str | None] = mapped_column(String(DIGEST_LENGTH))  # "<algorithm>:<hex>"
    time: Mapped[float] = mapped_column(Float, index=True)
    data: Mapped[str] = mapped_column(Text, default="{}")


class WebhookEndpointRow(Base):
    """A webhook endpoint's place in the journal, its retry state and its delivery lease."""

    __tablename__ = "webhook_endpoints"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    cursor: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[float | None] = mapped_column(Float)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ReplicaRow(Base):
    """A running `sync-agent run` process and its last heartbeat; stale rows age out."""

    __tablename__ = "replicas"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)


class PassRequestRow(Base):
    """A pass someone asked for (`POST /sync` on any replica), until a pass of it starts."""

    __tablename__ = "pass_requests"
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    requested_at: Mapped[float] = mapped_column(Float)


class RateBudgetRow(Base):
    """A source's request budget shared by every replica (PostgreSQL): the permits granted
    within the window, as parallel arrays of grant times (database clock) and counts."""

    __tablename__ = "rate_budgets"
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_times: Mapped[list[float]] = mapped_column(GRANT_TIMES)
    grant_counts: Mapped[list[int]] = mapped_column(GRANT_COUNTS)
    granted: Mapped[int] = mapped_column(Integer)  # by the newest grant statement
    checked_at: Mapped[float] = mapped_column(Float)  # the newest grant statement's time
    paused_until: Mapped[float] = mapped_column(Float)  # after a 429, for every replica
