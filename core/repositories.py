"""Every database query of the service, scoped by owner where rows belong to a key.

Repositories add and flush but never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    JSON,
    ColumnElement,
    Result,
    Select,
    exists,
    func,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session

from core.db.base import utcnow
from core.db.models import (
    FINISHED_STATUSES,
    ApiKey,
    Artifact,
    DatasetRecord,
    Job,
    JobEvent,
    ModelRecord,
    WebhookDelivery,
    new_id,
)
from core.service_errors import NotFoundError
from metacluster.filenames import REPORT_HTML


@dataclass(frozen=True, slots=True)
class ArtifactView:
    name: str
    bytes: int
    sha256: str


# The columns of a job that only the service and the workers read (ownership,
# idempotency, the lease). The others are what a client sees: their names and types are
# written once for the API, in service.schemas.JobOut (and once more in the client's
# `metacluster.client.Job`), not again here.
PRIVATE_JOB_COLUMNS = frozenset(
    {"owner_id", "idempotency_key", "request_hash", "fence", "lease_owner", "lease_expires_at"}
)
_VIEW_COLUMNS = [c for c in Job.__table__.c if c.name not in PRIVATE_JOB_COLUMNS]


def job_url(job_id: str) -> str:
    """A job's path in the API; its artifacts and report are below it."""
    return f"/v1/jobs/{job_id}"


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as clients see it (`GET /v1/jobs/{id}`, the job list): its public columns
    (by name, also as attributes: ``view.status``) and its artifacts by name, read with
    one plain statement (`JobRepository.view`). This is what clients poll: 1.4 ms of CPU
    per read on PostgreSQL, against 2.5 ms for the ORM `Job` with its relationship and
    4.3 ms for an outer join, which repeats the job row, JSON config and metrics
    included, once per artifact: a succeeded job has eight (docs/reliability.md,
    "Load")."""

    columns: dict[str, Any]
    artifacts: tuple[ArtifactView, ...]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.columns[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def of(cls, job: Job, artifacts: Sequence[Any] | None = None) -> JobView:
        """The view of a job already loaded (one just created or changed), with its
        artifacts (default: the job's relationship)."""
        columns = {c.name: getattr(job, c.name) for c in _VIEW_COLUMNS}
        rows = job.artifacts if artifacts is None else artifacts
        return cls(columns, tuple(ArtifactView(a.name, a.bytes, a.sha256) for a in rows))

    def public(self) -> dict[str, Any]:
        """The job as clients see it: the fields of `service.schemas.JobOut` (the API's
        answer validates this dict), of which a webhook's ``data`` is a part."""
        url = job_url(self.id)
        return {
            **self.columns,
            "progress": min(max(float(self.progress or 0.0), 0.0), 1.0),
            "error": self.error or None,
            "artifacts": [
                {
                    "name": a.name,
                    "bytes": a.bytes,
                    "sha256": a.sha256,
                    "url": f"{url}/artifacts/{a.name}",
                }
                for a in self.artifacts
            ],
            "report_url": (
                f"{url}/report" if any(a.name == REPORT_HTML for a in self.artifacts) else None
            ),
        }


@cache
def _views_statement(dialect: str) -> Select[Any]:
    """The view's columns, the artifacts as one JSON array of [name, bytes, sha256] per
    job (a correlated subquery: one statement, each job row once). Built once per
    dialect: statements are immutable, `.where()` makes new ones."""
    if dialect == "postgresql":
        agg, item = func.json_agg, func.json_build_array
    else:
        agg, item = func.json_group_array, func.json_array
    artifacts = (
        select(agg(item(Artifact.name, Artifact.bytes, Artifact.sha256)))
        .where(Artifact.job_id == Job.id)
        .scalar_subquery()
    )
    return select(*_VIEW_COLUMNS, type_coerce(artifacts, JSON).label("artifacts"))


def _view(row: Any) -> JobView:
    """A `JobRepository._views` row as a `JobView`, artifacts by name (PostgreSQL gives
    NULL, SQLite an empty array, for a job with none)."""
    values = dict(row._mapping)
    found = sorted(values.pop("artifacts") or [], key=lambda a: a[0])
    return JobView(values, tuple(ArtifactView(*a) for a in found))


class _Repository:
    def __init__(self, session: Session) -> None:
        self.session = session


R = TypeVar("R", ModelRecord, DatasetRecord, Job)
P = TypeVar("P", ModelRecord, DatasetRecord, Job, JobEvent)


T = TypeVar("T")
F = TypeVar("F")


def _cut(rows: Sequence[T], limit: int) -> tuple[Sequence[T], Any]:
    """The first `limit` of up to `limit + 1` ordered rows, and the cursor of the next
    page: the last kept row's id when more rows follow, else None."""
    page = rows[:limit]
    return page, (page[-1].id if len(rows) > limit and page else None)  # type: ignore[attr-defined]


def _page(session: Session, stmt: Select[P], limit: int) -> tuple[Sequence[P], Any]:
    """At most `limit` rows of the ordered `stmt`, and the cursor of the next page."""
    return _cut(session.scalars(stmt.limit(limit + 1)).all(), limit)


class _OwnedRepository(_Repository, Generic[R]):
    """Rows that belong to an API key: every read is scoped by the owner's id."""

    model: type[R]
    noun: str  # what a 404 calls the row

    def add(self, record: R) -> R:
        self.session.add(record)
        self.session.flush()
        return record

    def get(self, owner_id: str, record_id: str, *, for_update: bool = False) -> R | None:
        """The owner's row, or None. `for_update` locks it until the transaction ends
        (PostgreSQL; SQLite ignores it, its writes are serialised anyway)."""
        stmt = select(self.model).where(self.model.id == record_id, self.model.owner_id == owner_id)
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).one_or_none()

    def require(self, owner_id: str, record_id: str, *, for_update: bool = False) -> R:
        """`get`, with 404 `NotFoundError` when the owner has no such row."""
        return self._found(self.get(owner_id, record_id, for_update=for_update), record_id)

    def _found(self, record: F | None, record_id: str) -> F:
        if record is None:
            raise NotFoundError(f"{self.noun} {record_id} not found")
        return record

    def page(
        self, owner_id: str, *, after: str | None, limit: int
    ) -> tuple[Sequence[R], str | None]:
        """The owner's rows newest first (ids are time-ordered), strictly older than
        ``after``; returns the page and the next page's cursor."""
        stmt = select(self.model).where(self.model.owner_id == owner_id)
        if after is not None:
            stmt = stmt.where(self.model.id < after)
        return _page(self.session, stmt.order_by(self.model.id.desc()), limit)

    def delete(self, record: R) -> None:
        self.session.delete(record)
        self.session.flush()

    def created_before(self, cutoff: datetime, limit: int) -> list[R]:
        """Any owner's rows created before `cutoff`, oldest first (the retention sweep)."""
        stmt = (
            select(self.model)
            .where(self.model.created_at < cutoff)
            .order_by(self.model.created_at)
            .limit(limit)
        )
        return list(self.session.scalars(stmt))


class ModelRepository(_OwnedRepository[ModelRecord]):
    model = ModelRecord
    noun = "model"

    def by_id(self, model_id: str) -> ModelRecord | None:
        """Any owner's model: for the worker, which acts for the job's owner."""
        return self.session.get(ModelRecord, model_id)


class DatasetRepository(_OwnedRepository[DatasetRecord]):
    model = DatasetRecord
    noun = "dataset"


class JobRepository(_OwnedRepository[Job]):
    model = Job
    noun = "job"

    def view(self, owner_id: str, job_id: str) -> JobView | None:
        """What a client sees of the owner's job (`JobView`), or None."""
        stmt = self._views().where(Job.id == job_id, Job.owner_id == owner_id)
        row = self._core(stmt).one_or_none()
        return None if row is None else _view(row)

    def require_view(self, owner_id: str, job_id: str) -> JobView:
        """`view`, with 404 `NotFoundError` when the owner has no such job."""
        return self._found(self.view(owner_id, job_id), job_id)

    def view_page(
        self, owner_id: str, *, after: str | None, limit: int, status: str | None = None
    ) -> tuple[Sequence[JobView], str | None]:
        """`page` as `JobView`s: the owner's jobs newest first, older than `after`."""
        stmt = self._views().where(Job.owner_id == owner_id)
        if status is not None:
            stmt = stmt.where(Job.status == status)
        if after is not None:
            stmt = stmt.where(Job.id < after)
        rows, cursor = _cut(self._core(stmt.order_by(Job.id.desc()).limit(limit + 1)).all(), limit)
        return [_view(r) for r in rows], cursor

    def _views(self) -> Select[Any]:
        return _views_statement(self.session.get_bind().dialect.name)

    def _core(self, stmt: Select[Any]) -> Result[Any]:
        """`stmt` on the session's connection, past the ORM's statement handling
        (identity map, loader options): plain rows."""
        return self.session.connection().execute(stmt)

    def lock(self, job_id: str) -> Job | None:
        """The job row, locked until the transaction ends (PostgreSQL; SQLite serialises
        writers anyway): every state transition starts here."""
        return self.session.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()

    def lock_if_owned(self, job_id: str, fence: int) -> Job | None:
        """The running job row when `fence` still owns it, write-locked; else None.

        One conditional UPDATE checks and locks at once: on PostgreSQL it takes the row
        lock, on SQLite the database write lock, so no other writer (a delivery that
        took the job over, the API's cancel) can interleave before this transaction
        ends; a plain SELECT then UPDATE would let SQLite lose an update."""
        touched = self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.fence == fence, Job.status == "running")
            .values(fence=Job.fence)
            .execution_options(synchronize_session=False)
        )
        if getattr(touched, "rowcount", 0) != 1:
            return None
        return self.lock(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def stale_queued(self, cutoff: datetime, limit: int) -> list[tuple[str, str]]:
        """(id, queue) of jobs queued before `cutoff`, never delivered and without an
        event since; locked with SKIP LOCKED, so concurrent sweeps split them."""
        recent_event = exists().where(JobEvent.job_id == Job.id, JobEvent.at >= cutoff)
        rows = self.session.execute(
            select(Job.id, Job.queue)
            .where(
                Job.status == "queued",
                Job.deliveries == 0,
                Job.created_at < cutoff,
                ~recent_event,
            )
            .order_by(Job.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        return [(str(i), str(q)) for i, q in rows]

    def expired_leases(self, cutoff: datetime, limit: int) -> list[tuple[str, str]]:
        """(id, queue) of running jobs whose lease ended before `cutoff` with no event
        since: their owner died and nobody took them over. SKIP LOCKED, as above."""
        recent_event = exists().where(JobEvent.job_id == Job.id, JobEvent.at >= cutoff)
        rows = self.session.execute(
            select(Job.id, Job.queue)
            .where(
                Job.status == "running",
                Job.lease_expires_at.is_not(None),
                Job.lease_expires_at < cutoff,
                ~recent_event,
            )
            .order_by(Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        return [(str(i), str(q)) for i, q in rows]

    def active_count(self, owner_id: str) -> int:
        """The owner's queued and running jobs (the per-key quota)."""
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.owner_id == owner_id, Job.status.in_(("queued", "running")))
            )
            or 0
        )

    def unfinished(self) -> list[tuple[str, str]]:
        """(id, queue) of every queued or running job, oldest first."""
        rows = self.session.execute(
            select(Job.id, Job.queue).where(Job.status.in_(("queued", "running"))).order_by(Job.id)
        ).all()
        return [(str(i), str(q)) for i, q in rows]

    def get_by_idempotency_key(self, owner_id: str, key: str) -> Job | None:
        return self.session.scalars(
            select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key)
        ).one_or_none()

    def using(
        self,
        *,
        model_id: str | None = None,
        dataset: str | None = None,
        finished_since: datetime | None = None,
    ) -> int:
        """How many queued or running jobs use the model or the dataset; with
        `finished_since`, jobs that finished at or after it count too."""
        live: ColumnElement[bool] = Job.status.in_(("queued", "running"))
        if finished_since is not None:
            live = or_(live, Job.finished_at >= finished_since)
        stmt = select(func.count()).select_from(Job).where(live)
        if model_id is not None:
            stmt = stmt.where(Job.model_id == model_id)
        if dataset is not None:
            stmt = stmt.where(Job.dataset == dataset)
        return int(self.session.scalar(stmt) or 0)

    def of_model(self, model_id: str) -> list[Job]:
        return list(self.session.scalars(select(Job).where(Job.model_id == model_id)))

    def finished_before(self, cutoff: datetime, limit: int) -> list[Job]:
        """Any owner's finished jobs that ended before `cutoff`, oldest first."""
        stmt = (
            select(Job)
            .where(Job.status.in_(tuple(FINISHED_STATUSES)), Job.finished_at < cutoff)
            .order_by(Job.finished_at)
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def count_by_status(self) -> dict[str, int]:
        rows = self.session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        return {str(status): int(n) for status, n in rows}

    def recent_stage_durations(self, limit: int = 500) -> list[dict[str, Any]]:
        """``metrics["stages"]`` of the most recently finished succeeded jobs."""
        rows = self.session.scalars(
            select(Job.metrics)
            .where(Job.status == "succeeded", Job.finished_at.is_not(None))
            .order_by(Job.finished_at.desc())
            .limit(limit)
        ).all()
        out: list[dict[str, Any]] = []
        for metrics in rows:
            stages = (metrics or {}).get("stages")
            if isinstance(stages, dict):
                out.append(stages)
        return out


class JobEventRepository(_Repository):
    def add(self, job_id: str, kind: str, **fields: Any) -> JobEvent:
        """Append an event with the next per-job sequence number (1, 2, ...).

        The job row is locked first (PostgreSQL; SQLite serialises writers anyway), so
        the API (queued, cancel) and the worker (status, stage, progress, log) never
        read the same ``max(seq)``; the lock is held until the caller commits.
        """
        self.session.execute(select(Job.id).where(Job.id == job_id).with_for_update())
        seq = self.session.scalar(
            select(func.coalesce(func.max(JobEvent.seq), 0)).where(JobEvent.job_id == job_id)
        )
        event = JobEvent(job_id=job_id, seq=int(seq or 0) + 1, at=utcnow(), kind=kind, **fields)
        self.session.add(event)
        self.session.flush()
        return event

    def last_status_data(self, job_id: str) -> dict[str, Any] | None:
        """`data` of the job's latest ``status`` event."""
        data = self.session.scalars(
            select(JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.kind == "status")
            .order_by(JobEvent.seq.desc())
            .limit(1)
        ).first()
        return dict(data) if isinstance(data, dict) else None

    def after_seq(self, job_id: str, seq: int, limit: int) -> Sequence[JobEvent]:
        """The job's events with a sequence number above `seq`, in order."""
        stmt = (
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > seq)
            .order_by(JobEvent.seq)
            .limit(limit)
        )
        return self.session.scalars(stmt).all()

    def page(
        self, job_id: str, *, after: int | None, limit: int
    ) -> tuple[Sequence[JobEvent], int | None]:
        """The job's events oldest first, after ``after``; the page and the next cursor."""
        stmt = select(JobEvent).where(JobEvent.job_id == job_id)
        if after is not None:
            stmt = stmt.where(JobEvent.id > after)
        return _page(self.session, stmt.order_by(JobEvent.id), limit)


class ApiKeyRepository(_Repository):
    def lock(self, key_id: str) -> ApiKey | None:
        return self.session.scalars(
            select(ApiKey).where(ApiKey.id == key_id).with_for_update()
        ).first()


class WebhookDeliveryRepository(_Repository):
    def add(self, delivery: WebhookDelivery) -> WebhookDelivery:
        self.session.add(delivery)
        self.session.flush()
        return delivery

    def get(self, delivery_id: str, *, for_update: bool = False) -> WebhookDelivery | None:
        stmt = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).first()

    def due(self, now: datetime, limit: int) -> list[WebhookDelivery]:
        """Pending deliveries whose next attempt is due, oldest first; locked with SKIP
        LOCKED, so the senders of several workers split them."""
        stmt = (
            select(WebhookDelivery)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(self.session.scalars(stmt))

    def of_job(self, job_id: str) -> list[WebhookDelivery]:
        stmt = (
            select(WebhookDelivery)
            .where(WebhookDelivery.job_id == job_id)
            .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        )
        return list(self.session.scalars(stmt))


class ArtifactRepository(_Repository):
    def of_job(self, job_id: str) -> list[Artifact]:
        return list(
            self.session.scalars(
                select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)
            )
        )

    def get(self, job_id: str, name: str) -> Artifact | None:
        return self.session.scalars(
            select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)
        ).one_or_none()

    def replace(self, job_id: str, blobs: Sequence[tuple[str, int, str, str]]) -> None:
        """The job's artifacts become exactly `blobs` ((name, bytes, sha256, key) each):
        rows of an earlier delivery are dropped, so a job never has two sets."""
        for old in self.session.scalars(select(Artifact).where(Artifact.job_id == job_id)):
            self.session.delete(old)
        self.session.flush()
        for name, size, sha, key in blobs:
            self.session.add(
                Artifact(
                    id=new_id("art"),
                    job_id=job_id,
                    name=name,
                    bytes=size,
                    sha256=sha,
                    storage_key=key,
                    created_at=utcnow(),
                )
            )
        self.session.flush()
