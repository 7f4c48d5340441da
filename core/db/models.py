"""SQLAlchemy 2.0 typed models: API keys, models, datasets, jobs, job events, artifacts.

The job row is the record of truth for status, stage, progress, metrics and errors.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db.base import Base, UTCDateTime, utcnow

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

# SQLite only auto-increments an INTEGER PRIMARY KEY, not BIGINT.
_BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def new_id(prefix: str) -> str:
    """Time-ordered id ``{prefix}_{12 hex ms}{16 hex random}``: sorting by id sorts by creation.

    That makes ``id`` alone a stable keyset-pagination cursor.
    """
    return f"{prefix}_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def _uuid() -> str:
    return str(uuid.uuid4())


class ApiKey(Base):
    __tablename__ = "api_keys"
    # Keys are found by their (indexed) prefix, then compared in constant time.
    __table_args__ = (Index("ix_api_keys_prefix", "prefix"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(200))
    # sha256 hex of the plaintext key; the plaintext is shown once and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Standard Webhooks signing secret (``whsec_<base64>``), made on first use; after a
    # rotation the previous one signs too until the grace period after `rotated_at`.
    webhook_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    webhook_secret_previous: Mapped[str | None] = mapped_column(String(64), nullable=True)
    webhook_secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class _UploadedFile:
    """The columns of an uploaded file of one API key: its id, owner and file name first,
    the upload time last (`sort_order` keeps the tables' column order)."""

    id: Mapped[str] = mapped_column(String(40), primary_key=True, sort_order=-1)
    owner_id: Mapped[str] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True, sort_order=-1
    )
    filename: Mapped[str] = mapped_column(String(255), sort_order=-1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, sort_order=1)


class ModelRecord(_UploadedFile, Base):
    __tablename__ = "models"

    family: Mapped[str] = mapped_column(String(40))
    format: Mapped[str] = mapped_column(String(40))
    edges: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # Storage key of the checkpoint (for pykan: of the directory prefix; see services).
    storage_key: Mapped[str] = mapped_column(String(512))
    info: Mapped[dict[str, Any]] = mapped_column(JSON)

    @property
    def layers(self) -> list[dict[str, Any]]:
        """The compressible layers as `inspect_model` saw them (kept in `info`)."""
        return list(self.info.get("layers", []))


class DatasetRecord(_UploadedFile, Base):
    __tablename__ = "datasets"

    task: Mapped[str] = mapped_column(String(20))
    n_train: Mapped[int] = mapped_column(Integer)
    n_test: Mapped[int] = mapped_column(Integer)
    input_shape: Mapped[list[int]] = mapped_column(JSON)
    n_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Width of the model output the data needs: n_classes, or regression targets.
    n_outputs: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(512))


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key"),
        # Keyset pagination of one owner's jobs, newest first.
        Index("ix_jobs_owner_id_id", "owner_id", "id"),
        # The per-key quota counts an owner's queued and running jobs.
        Index("ix_jobs_owner_id_status", "owner_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    # A built-in dataset name ("digits", "eq:...") or an uploaded dataset id ("ds_...").
    dataset: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    stage: Mapped[str | None] = mapped_column(String(40), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # {"code": ..., "message": ...}
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # sha256 of the canonical request body, to tell a replay from a conflicting reuse.
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    queue: Mapped[str] = mapped_column(String(40), default="cpu")
    # Where job events are POSTed (Standard Webhooks), and which ones.
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # One owner at a time: each claim that runs the job takes a new fencing token
    # (`fence` + 1) and a lease; every state write and the artifact registration of a
    # delivery check its token, so a delivery that lost the job writes nothing.
    fence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    # A deleted job takes its artifact rows along (the database's ON DELETE CASCADE
    # removes those not loaded).
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="job",
        order_by="Artifact.name",
        lazy="selectin",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_seq", "job_id", "seq"),)

    id: Mapped[int] = mapped_column(_BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(20))
    stage: Mapped[str | None] = mapped_column(String(40), nullable=True)
    progress: Mapped[float | None] = mapped_column(Float, nullable=True)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class WebhookDelivery(Base):
    """One webhook message (an outbox row): written in the transaction of the job change
    it reports, sent (and retried) by the workers' webhook sender."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)

    # The Standard Webhooks `webhook-id`: the same on every attempt of one message.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(40))  # job.started, job.succeeded, ...
    url: Mapped[str] = mapped_column(String(2048))
    # The exact body, so every attempt signs and sends the same bytes.
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    job: Mapped[Job] = relationship(back_populates="artifacts")


class WorkerHeartbeat(Base):
    """A worker process's last sign of life, written by a thread of its own every
    ``worker_heartbeat_s`` whatever job it runs; `/readyz` wants a recent one."""

    __tablename__ = "worker_heartbeats"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
