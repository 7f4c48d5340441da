"""Execution of one compression job: the logic behind the thin Celery task.

Claims the job row, runs ``compress`` with progress, cancel and stage checkpoints, stores the artifact.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metacluster import errors
from service.db.base import utcnow
from service.db.models import (
    FINISHED_STATUSES,
    Artifact,
    DatasetRecord,
    Job,
    JobEvent,
    ModelRecord,
    new_id,
)
from service.db.session import session_scope
from service.repositories import JobEventRepository
from service.settings import Settings, get_settings
from service.storage import Storage, artifact_key, checkpoints_key, get_storage

if TYPE_CHECKING:
    from metacluster.compress import StageCheckpoint

log = logging.getLogger(__name__)

ARTIFACT_NAME = "model.mcz"
REPORT_NAME = "report.json"

# Progress events are written at most this often (plus on every stage change), and
# the cancel flag is read at most this often: both are database round trips.
EVENT_INTERVAL_S = 0.5
CANCEL_POLL_S = 0.5

# Share of the overall progress bar per stage; stages not listed count as 1.
STAGE_WEIGHTS: dict[str, float] = {"meta": 4.0, "kmeans": 1.0, "finetune": 3.0}


def _add_event(session: Session, job_id: str, kind: str, **fields: Any) -> None:
    # The one writer of job events (the API's queued/cancel events go through it too):
    # it numbers them per job and serialises writers on the job row.
    JobEventRepository(session).add(job_id, kind, **fields)


@dataclass
class _Claim:
    """What the runner needs from the job row, read inside the claiming transaction."""

    status: str
    model_path: Path | None = None
    model_format: str = "auto"
    dataset: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    delivery: int = 0
    # Another message owns the running job; this delivery does nothing.
    duplicate: bool = False


def _owning_message(session: Session, job_id: str) -> str | None:
    """Broker message id that claimed the job last (its latest ``status`` event)."""
    data = session.scalars(
        select(JobEvent.data)
        .where(JobEvent.job_id == job_id, JobEvent.kind == "status")
        .order_by(JobEvent.seq.desc())
        .limit(1)
    ).first()
    owner = (data or {}).get("message_id")
    return owner if isinstance(owner, str) else None


def _claim(
    job_id: str,
    settings: Settings,
    storage: Storage,
    message_id: str | None = None,
    takeover: bool = False,
) -> _Claim:
    """Count this delivery and mark the job running, or settle it without running."""
    with session_scope(settings) as session:
        job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()
        if job is None:
            log.warning("job %s not found; dropping the message", job_id)
            return _Claim(status="missing")
        if job.status in FINISHED_STATUSES:
            # A re-delivery of a job that already finished (e.g. the worker died after
            # the final commit but before the ack): nothing to do.
            return _Claim(status=job.status)
        if job.status == "running" and message_id is not None and not takeover:
            owner = _owning_message(session, job.id)
            if owner is not None and owner != message_id:
                # A second message for a job that another message claimed (e.g. the
                # stale-queue recovery re-sent a job whose first message was only late).
                # The owner's message stays unacked until the job is final, and the broker
                # re-delivers it if its worker dies; running this one too would run the
                # job twice at once.
                log.info(
                    "job %s is running under message %s; dropping duplicate message %s",
                    job_id,
                    owner,
                    message_id,
                )
                return _Claim(status="running", duplicate=True)
        job.deliveries += 1
        if job.cancel_requested:
            _finish(
                session,
                job,
                "cancelled",
                error={"code": "cancelled", "message": "job was cancelled before it started"},
            )
            return _Claim(status="cancelled")
        if job.deliveries > settings.max_deliveries:
            message = (
                f"job was delivered {job.deliveries} times (limit {settings.max_deliveries}); "
                "its worker died every time, giving up"
            )
            _finish(
                session, job, "failed", error={"code": "too_many_deliveries", "message": message}
            )
            return _Claim(status="failed")
        resumed = job.status == "running"
        job.status = "running"
        if job.started_at is None:
            job.started_at = utcnow()
        message = f"delivery {job.deliveries}" + (
            " (re-delivered after a worker loss)" if resumed else ""
        )
        data: dict[str, Any] = {"status": "running", "delivery": job.deliveries}
        if message_id is not None:
            # This message now owns the job: see the duplicate check above.
            data["message_id"] = message_id
        _add_event(session, job.id, "status", message=message, data=data)
        model = session.get(ModelRecord, job.model_id)
        if model is None:
            raise errors.InputError(
                f"model {job.model_id} of job {job.id} no longer exists", code="not_found"
            )
        dataset = job.dataset
        if dataset.startswith("ds_"):
            record = session.get(DatasetRecord, dataset)
            if record is None or record.owner_id != job.owner_id:
                raise errors.DatasetError(f"dataset {dataset} of job {job.id} no longer exists")
            dataset = str(storage.path(record.storage_key))
        return _Claim(
            status="running",
            model_path=storage.path(model.storage_key),
            model_format=model.format or "auto",
            dataset=dataset,
            config=dict(job.config or {}),
            delivery=job.deliveries,
        )


def _finish(
    session: Session,
    job: Job,
    status: str,
    *,
    metrics: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
) -> None:
    job.status = status
    job.finished_at = utcnow()
    if metrics is not None:
        job.metrics = metrics
        job.progress = 1.0
    job.error = error
    data: dict[str, Any] = {"status": status}
    if error is not None:
        data["error"] = error
    _add_event(
        session,
        job.id,
        "status",
        message=status if error is None else f"{status}: {error['message']}",
        data=data,
    )


class _JobReporter:
    """Progress callback, cancel check and checkpoint wrapper bound to one job row."""

    def __init__(self, job_id: str, settings: Settings, n_k: int = 1) -> None:
        self.job_id = job_id
        self.settings = settings
        # A K sweep runs the meta-learner once, then K-means and fine-tuning per K.
        self._expected = STAGE_WEIGHTS["meta"] + n_k * (
            STAGE_WEIGHTS["kmeans"] + STAGE_WEIGHTS["finetune"]
        )
        self._stage: str | None = None
        self._done = 0.0  # weight of the stage visits already finished
        self._last_event = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False
        self._progress = 0.0

    def _fraction(self, stage: str, step: int, total: int) -> float:
        current = STAGE_WEIGHTS.get(stage, 1.0) * (step / total if total > 0 else 0.0)
        expected = max(self._expected, self._done + STAGE_WEIGHTS.get(stage, 1.0))
        # Monotone and below 1: the job is only complete once the artifact is stored.
        self._progress = max(self._progress, min(0.99, (self._done + current) / expected))
        return self._progress

    def progress(self, stage: str, step: int, total: int, loss: float | None) -> None:
        stage_changed = stage != self._stage
        if stage_changed and self._stage is not None:
            self._done += STAGE_WEIGHTS.get(self._stage, 1.0)
        self._stage = stage
        fraction = self._fraction(stage, step, total)
        now = time.monotonic()
        if not stage_changed and step < total and now - self._last_event < EVENT_INTERVAL_S:
            return
        self._last_event = now
        kind = "stage" if stage_changed else "progress"
        with session_scope(self.settings) as session:
            job = session.get(Job, self.job_id)
            if job is None:
                return
            job.stage = stage
            job.progress = fraction
            _add_event(
                session,
                self.job_id,
                kind,
                stage=stage,
                progress=fraction,
                loss=None if loss is None else float(loss),
                message=f"{stage} {step}/{total}",
                data={"step": step, "total": total},
            )

    def should_stop(self) -> bool:
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check < CANCEL_POLL_S:
            return False
        self._last_cancel_check = now
        with session_scope(self.settings) as session:
            flag = session.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
        self._cancelled = bool(flag)
        return self._cancelled

    def log(self, message: str, **data: Any) -> None:
        with session_scope(self.settings) as session:
            _add_event(
                session, self.job_id, "log", stage=self._stage, message=message, data=data or None
            )


class _RecordingCheckpoint:
    """Stage checkpoint that writes a job event whenever a finished stage is reused."""

    def __init__(self, inner: StageCheckpoint, reporter: _JobReporter) -> None:
        self._inner = inner
        self._reporter = reporter

    def load(self, stage: str) -> dict[str, Any] | None:
        state = self._inner.load(stage)
        if state is not None:
            self._reporter.log(
                f"resumed: stage {stage} restored from its checkpoint", resumed_stage=stage
            )
        return state

    def save(self, stage: str, state: dict[str, Any]) -> None:
        self._inner.save(stage, state)


def warm_up() -> None:
    """Import what every job needs (torch, faiss, the library) before the first job.

    A worker pays these imports once at start instead of inside the first job's
    wall time; the CLI pays them on every run.
    """
    import faiss  # noqa: F401
    import sklearn.datasets  # noqa: F401
    import torch

    import metacluster.artifact
    import metacluster.compress
    import metacluster.data
    import metacluster.formats
    import metacluster.training  # noqa: F401

    # Jobs with device "auto" run on CUDA when this process sees a GPU.
    if torch.cuda.is_available():
        log.info("worker device: cuda (%d GPU(s))", torch.cuda.device_count())
    else:
        log.info("worker device: cpu")


def _execute(
    job_id: str, claim: _Claim, settings: Settings, storage: Storage, reporter: _JobReporter
) -> None:
    """Load inputs, compress, store the artifact and report, mark the job succeeded."""
    from metacluster.artifact import write_artifact
    from metacluster.compress import DirectoryCheckpoint, MetaClusterConfig, compress
    from metacluster.data import load_dataset
    from metacluster.formats import load_model

    assert claim.model_path is not None
    config = MetaClusterConfig.from_dict(claim.config)
    # The format detected at upload; sidecars (pykan config, spec.json) lie beside it.
    model = load_model(claim.model_path, format=claim.model_format)
    # The data split uses the loader's default seed, as `metacluster compress` and
    # `metacluster eval` do, so the job's metrics are reproducible with the CLI.
    data = load_dataset(claim.dataset)
    ckpt_dir = storage.path(checkpoints_key(job_id))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = _RecordingCheckpoint(DirectoryCheckpoint(ckpt_dir), reporter)
    compressed, report = compress(
        model,
        config,
        data,
        progress=reporter.progress,
        should_stop=reporter.should_stop,
        checkpoint=checkpoint,
    )
    report_dict: dict[str, Any] = report.to_dict()

    with tempfile.TemporaryDirectory(prefix=f"mc-{job_id}-") as tmp:
        artifact_path = Path(tmp) / ARTIFACT_NAME
        write_artifact(compressed, artifact_path, report)
        report_dict["bytes_after"] = artifact_path.stat().st_size
        if report_dict.get("bytes_before"):
            report_dict["ratio"] = report_dict["bytes_before"] / report_dict["bytes_after"]
        report_path = Path(tmp) / REPORT_NAME
        report_path.write_text(json.dumps(report_dict, indent=2, sort_keys=True))
        stored = {
            name: storage.save_file(artifact_key(job_id, name), Path(tmp) / name)
            for name in (ARTIFACT_NAME, REPORT_NAME)
        }

    with session_scope(settings) as session:
        job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one()
        # A previous delivery may have stored artifacts before dying; replace them so the
        # job ends with exactly one row per name.
        for old in session.scalars(select(Artifact).where(Artifact.job_id == job_id)):
            session.delete(old)
        session.flush()
        for name, (size, sha) in stored.items():
            session.add(
                Artifact(
                    id=new_id("art"),
                    job_id=job_id,
                    name=name,
                    bytes=size,
                    sha256=sha,
                    storage_key=artifact_key(job_id, name),
                    created_at=utcnow(),
                )
            )
        job.stage = None
        _finish(session, job, "succeeded", metrics=report_dict)


def _fail(settings: Settings, job_id: str, status: str, error: dict[str, str]) -> None:
    with session_scope(settings) as session:
        job = session.get(Job, job_id)
        if job is not None and job.status not in FINISHED_STATUSES:
            _finish(session, job, status, error=error)


def run_job(
    job_id: str,
    *,
    settings: Settings | None = None,
    storage: Storage | None = None,
    message_id: str | None = None,
    takeover: bool = False,
) -> str:
    """Run job ``job_id`` to a final status and return it (idempotent per delivery).

    ``message_id`` (the broker message's task id) makes the message that claims a job
    its owner: another message delivered while the job runs is dropped and "running"
    returned, while a re-delivery of the owner (same id: worker lost, or a retry)
    resumes it. ``takeover`` resumes a running job under a new message whatever owned
    it, for a message sent because the owner's was lost (embedded mode restart).
    """
    settings = settings or get_settings()
    storage = storage or get_storage(settings)
    try:
        claim = _claim(job_id, settings, storage, message_id, takeover)
    except errors.MetaClusterError as exc:
        _fail(settings, job_id, "failed", {"code": exc.code, "message": exc.message})
        return "failed"
    if claim.status != "running" or claim.duplicate:
        return claim.status
    log.info("job %s: delivery %d", job_id, claim.delivery)
    k = claim.config.get("k")
    reporter = _JobReporter(job_id, settings, n_k=len(k) if isinstance(k, list) and k else 1)
    try:
        _execute(job_id, claim, settings, storage, reporter)
    except errors.CancelledError:
        _fail(settings, job_id, "cancelled", {"code": "cancelled", "message": "job was cancelled"})
        _drop_checkpoints(storage, job_id)
        return "cancelled"
    except errors.MetaClusterError as exc:
        _fail(settings, job_id, "failed", {"code": exc.code, "message": exc.message})
        return "failed"
    except Exception as exc:
        log.exception("job %s failed with an unexpected error", job_id)
        _fail(
            settings,
            job_id,
            "failed",
            {"code": "internal", "message": f"internal error: {type(exc).__name__}: {exc}"},
        )
        return "failed"
    _drop_checkpoints(storage, job_id)
    return "succeeded"


def _drop_checkpoints(storage: Storage, job_id: str) -> None:
    # Checkpoints exist only to resume an unfinished job; a finished one frees the space.
    try:
        storage.delete_prefix(checkpoints_key(job_id))
    except OSError:
        log.warning("could not delete the checkpoints of job %s", job_id, exc_info=True)


__all__ = ["ARTIFACT_NAME", "REPORT_NAME", "run_job", "warm_up"]
