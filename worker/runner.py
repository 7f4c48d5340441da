"""Execution of one compression job: what the thin Celery task calls.

Claims the job (`core.jobs.claim`), copies its inputs out of storage, runs the
library's one use case (`metacluster.workflow.compress_file`) with progress, cancel
and stage checkpoints kept in storage, stores the artifact and the report, and
finishes the job (`core.jobs.succeed` / `fail`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from core import jobs
from core.db.base import utcnow
from core.db.session import session_scope
from core.repositories import JobRepository
from core.service_errors import JobTimeoutError, LeaseLostError, StorageWriteError
from core.settings import Settings, get_settings
from core.storage import Storage, artifact_key, artifacts_prefix, checkpoints_key, get_storage
from metacluster import errors
from metacluster.filenames import MODEL_FILE, REPORT_JSON
from worker.checkpoints import BlobCheckpoint

log = logging.getLogger(__name__)

# A job stores MODEL_FILE and REPORT_JSON, and beside them REPORT_HTML (self-contained)
# and its PNGs (metacluster.reporting.PLOTS): the names are metacluster.filenames'.

# Progress events are written at most this often (plus on every stage change), and
# the cancel flag is read at most this often: both are database round trips.
EVENT_INTERVAL_S = 0.5
CANCEL_POLL_S = 0.5


def worker_name() -> str:
    """Who holds a lease: host and process id (shown in logs and the job row)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaseKeeper(threading.Thread):
    """Renews the delivery's lease every ``ttl / 4`` while the job runs.

    `lost` is set when the row says another delivery owns the job (its fence moved
    on) or when the lease could not be renewed for a whole ``ttl`` (database
    unreachable: by then another worker may have taken the job over); the reporter
    then stops the run at its next step, and nothing more is written.
    """

    def __init__(self, job_id: str, fence: int, settings: Settings) -> None:
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.job_id = job_id
        self.fence = fence
        self.settings = settings
        self.ttl_s = settings.lease_ttl_s
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        last_ok = time.monotonic()
        while not self._stop_event.wait(self.ttl_s / 4):
            try:
                with session_scope(self.settings) as session:
                    owned = jobs.renew_lease(session, self.job_id, self.fence, self.ttl_s)
            except Exception as exc:  # database unreachable: retry until the lease runs out
                log.warning("job %s: lease renewal failed: %r", self.job_id, exc)
                if time.monotonic() - last_ok > self.ttl_s:
                    log.error("job %s: lease expired while the database was away", self.job_id)
                    self.lost.set()
                    return
                continue
            if not owned:
                log.error("job %s: fence %d lost the job; stopping", self.job_id, self.fence)
                self.lost.set()
                return
            last_ok = time.monotonic()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=10)


class JobReporter:
    """Progress callback, cancel check and event log bound to one job row and delivery.

    The overall fraction comes from the plan the engine runs (`planned`, called by
    `metacluster.compress.compress` before its first stage): each stage visit weighs
    what the plan says it costs. Every write carries the
    delivery's fencing token; `should_stop` also ends the run when the lease is lost
    (`LeaseLostError`) or the job's wall-time limit passed (`JobTimeoutError`).
    """

    def __init__(
        self,
        job_id: str,
        settings: Settings,
        stages: list[Any] | None = None,
        *,
        fence: int = 0,
        deadline: float | None = None,
        lease: LeaseKeeper | None = None,
    ) -> None:
        from metacluster.compress import StageProgress
        from metacluster.compress.pipeline.progress import StageClock

        self.job_id = job_id
        self.settings = settings
        self.fence = fence
        self._deadline = deadline  # time.time() after which the job fails with `timeout`
        self._lease = lease
        self._tracker = StageProgress(stages or [])
        self._stage: str | None = None
        self._clock = StageClock(EVENT_INTERVAL_S)
        self._last_cancel_check = 0.0
        self._cancelled = False

    def planned(self, the_plan: Any) -> None:
        """The engine's plan (`metacluster.compress.Plan`): its stages weigh the progress."""
        from metacluster.compress import StageProgress

        self._tracker = StageProgress(the_plan.stages)

    def check_owner(self) -> None:
        """Raise when this delivery may not go on: lease lost, or past the time limit."""
        if self._lease is not None and self._lease.lost.is_set():
            raise LeaseLostError(f"job {self.job_id}: this delivery lost its lease")
        if self._deadline is not None and time.time() > self._deadline:
            limit = self.settings.job_timeout_s
            raise JobTimeoutError(
                f"job ran longer than its wall-time limit of {limit:.0f} s "
                "(METACLUSTER_JOB_TIMEOUT_S)"
            )

    def progress(self, stage: str, step: int, total: int, loss: float | None) -> None:
        # The CLI's log lines, as events: a stage's start and end, progress with its
        # elapsed time and ETA at most every EVENT_INTERVAL_S.
        self._stage = stage
        fraction = self._tracker.update(stage, step, total)
        events = self._clock.update(stage, step, total, loss)
        if not events:
            return
        self.check_owner()
        with session_scope(self.settings) as session:
            for event in events:
                jobs.record_progress(
                    session,
                    self.job_id,
                    fence=self.fence,
                    kind="stage" if event.kind == "start" else "progress",
                    stage=event.stage,
                    progress=fraction,
                    loss=None if event.loss is None else float(event.loss),
                    message=event.line(),
                    data={
                        "step": event.step,
                        "total": event.total,
                        "event": event.kind,
                        "elapsed_s": round(event.elapsed, 3),
                        "eta_s": None if event.eta is None else round(event.eta, 3),
                    },
                )

    def should_stop(self) -> bool:
        self.check_owner()
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check < CANCEL_POLL_S:
            return False
        self._last_cancel_check = now
        with session_scope(self.settings) as session:
            self._cancelled = JobRepository(session).cancel_requested(self.job_id)
        return self._cancelled

    def log(self, message: str, **data: Any) -> None:
        with session_scope(self.settings) as session:
            jobs.log_event(
                session, self.job_id, message, fence=self.fence, stage=self._stage, **data
            )


class _RecordingCheckpoint:
    """Stage checkpoint that writes a job event whenever a finished stage is reused."""

    def __init__(self, inner: BlobCheckpoint, reporter: JobReporter) -> None:
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
        self._reporter.check_owner()  # a delivery that lost the job must not overwrite them
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
    import metacluster.training
    import metacluster.workflow  # noqa: F401

    # Jobs with device "auto" run on CUDA when this process sees a GPU.
    if torch.cuda.is_available():
        log.info("worker device: cuda (%d GPU(s))", torch.cuda.device_count())
    else:
        log.info("worker device: cpu")


@dataclass
class JobRun:
    """One delivery of one claimed job: what its steps share (the job, its claim, the
    settings, the storage and the reporter), and the steps, from the inputs to the
    final status."""

    job_id: str
    claim: jobs.Claim
    settings: Settings
    storage: Storage
    reporter: JobReporter

    @property
    def fence(self) -> int:
        return self.claim.fence

    def run(self) -> str:
        """Execute the claimed job and settle it; the final status (or "lost")."""
        try:
            self.reporter.check_owner()  # a re-delivery after the time limit fails at once
            _execute(self)
        except LeaseLostError as exc:
            # Another delivery owns the job now: write nothing, keep its checkpoints.
            log.warning("job %s: %s", self.job_id, exc)
            return "lost"
        except errors.CancelledError:
            self.fail("cancelled", {"code": "cancelled", "message": "job was cancelled"})
            return "cancelled"
        except errors.MetaClusterError as exc:
            # JobTimeoutError ("timeout") and StorageWriteError ("storage_error") land here.
            self.fail("failed", {"code": exc.code, "message": exc.message})
            return "failed"
        except Exception as exc:
            log.exception("job %s failed with an unexpected error", self.job_id)
            self.fail(
                "failed",
                {"code": "internal", "message": f"internal error: {type(exc).__name__}: {exc}"},
            )
            return "failed"
        _drop_checkpoints(self.storage, self.job_id)
        return "succeeded"

    def fail(self, status: str, error: dict[str, str]) -> None:
        """Settle the job as failed or cancelled; its checkpoints go once it is settled."""
        if _fail(self.settings, self.job_id, status, error, fence=self.fence):
            _drop_checkpoints(self.storage, self.job_id)

    @contextlib.contextmanager
    def inputs(self) -> Iterator[tuple[Path, str]]:
        """(checkpoint path, data spec) as local files: every file of the model (a pykan
        pair, a spec sidecar travels with its checkpoint) and an uploaded dataset."""
        claim, storage, scratch = self.claim, self.storage, self.settings.scratch
        scratch.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"mc-in-{claim.model_id}-", dir=scratch))
        try:
            with contextlib.ExitStack() as stack:
                model_dir = folder / "model"
                model_dir.mkdir()
                prefix = claim.model_key.rsplit("/", 1)[0] + "/"
                for key in storage.list(prefix):
                    stack.enter_context(storage.local_copy(key, model_dir))
                model_path = model_dir / claim.model_key.rsplit("/", 1)[1]
                data = claim.dataset
                if claim.dataset_key is not None:
                    data = str(stack.enter_context(storage.local_copy(claim.dataset_key, folder)))
                yield model_path, data
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def execute(self) -> None:
        """Compress through the library's use case, store artifact and report, succeed.

        The config is validated once (`from_dict`) and the run planned once, by the
        engine: its plan weighs this job's progress (`JobReporter.planned`)."""
        from metacluster.compress import MetaClusterConfig
        from metacluster.workflow import compress_file

        job_id, reporter = self.job_id, self.reporter
        config = MetaClusterConfig.from_dict(self.claim.config)
        checkpoint = _RecordingCheckpoint(
            BlobCheckpoint(self.storage, checkpoints_key(job_id)), reporter
        )
        with (
            self.inputs() as (model_path, data),
            tempfile.TemporaryDirectory(prefix=f"mc-{job_id}-", dir=self.settings.scratch) as tmp,
        ):
            folder = Path(tmp)
            # The format detected at upload; the data split uses the loader's default seed,
            # as `metacluster compress` does, so the job's numbers are the CLI's numbers.
            report = compress_file(
                model_path,
                data,
                config,
                folder / MODEL_FILE,
                format=self.claim.model_format,
                progress=reporter.progress,
                should_stop=reporter.should_stop,
                checkpoint=checkpoint,
                on_plan=reporter.planned,
            )
            report_dict = report.to_dict()
            (folder / REPORT_JSON).write_text(json.dumps(report_dict, indent=2, sort_keys=True))
            names = [MODEL_FILE, REPORT_JSON, *self.draw_report(report_dict, folder)]
            reporter.check_owner()
            stored = self.store_artifacts(folder, names)
            try:
                with session_scope(self.settings) as session:
                    jobs.succeed(session, job_id, report_dict, stored, fence=self.fence)
            except BaseException:
                # Not registered (fenced out, or the database failed): the blobs of this
                # delivery must not linger where nothing points at them.
                _delete_quietly(self.storage, artifacts_prefix(job_id, self.fence))
                raise
            if self.settings.mlflow_uri:
                self.log_to_mlflow([folder / n for n in names])

    def store_artifacts(self, folder: Path, names: list[str]) -> list[tuple[str, int, str, str]]:
        """Put the artifact, the report and its pictures under this delivery's prefix; on a
        storage failure (disk full, I/O error) remove what was written and raise
        StorageWriteError."""
        stored: list[tuple[str, int, str, str]] = []
        try:
            for name in names:
                key = artifact_key(self.job_id, name, self.fence)
                blob = self.storage.put(key, folder / name)
                stored.append((name, blob.bytes, str(blob.sha256), key))
        except OSError as exc:
            _delete_quietly(self.storage, artifacts_prefix(self.job_id, self.fence))
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StorageWriteError(f"storing the artifact failed: {reason}") from exc
        return stored

    def draw_report(self, report: dict[str, Any], folder: Path) -> list[str]:
        """report.html and its PNGs beside the artifact; a report that cannot be drawn (no
        matplotlib on this worker) is a job event, not a failed job. Returns the names."""
        from metacluster.reporting import render_report

        try:
            rendered = render_report(report, folder, title=f"MetaCluster job {self.job_id}")
        except Exception as exc:
            log.warning("job %s: report not drawn", self.job_id, exc_info=True)
            self.reporter.log(
                f"report not drawn: {type(exc).__name__}: {exc}", report_error=str(exc)
            )
            return []
        return [p.name for p in rendered.files()]

    def log_to_mlflow(self, files: list[Path]) -> None:
        """Log the succeeded job as an MLflow run; a failure is a job event, not a failed
        job (written with `jobs.note`: the job has finished, no delivery owns it any more)."""
        from metacluster.tracking import log_job

        job_id, settings = self.job_id, self.settings
        with session_scope(settings) as session:
            job = JobRepository(session).lock(job_id)
            if job is None:
                return
            record = {
                "id": job.id,
                "status": job.status,
                "config": job.config,
                "metrics": job.metrics,
                "dataset": job.dataset,
                "model_id": job.model_id,
            }
        base = (settings.public_url or "").rstrip("/")
        try:
            run_id = log_job(
                record,
                files,
                tracking_uri=settings.mlflow_uri,
                experiment=settings.mlflow_experiment,
                job_url=f"{base}/v1/jobs/{job_id}",
            )
        except Exception as exc:
            log.warning("job %s: MLflow logging failed", job_id, exc_info=True)
            self.note(f"MLflow logging failed: {type(exc).__name__}: {exc}", mlflow_error=str(exc))
            return
        self.note(f"logged to MLflow as run {run_id}", mlflow_run_id=run_id)

    def note(self, message: str, **data: Any) -> None:
        with session_scope(self.settings) as session:
            jobs.note(session, self.job_id, message, **data)


def _execute(run: JobRun) -> None:
    """The run's work, from its inputs to a succeeded job (a test stands in a worker
    that dies here)."""
    run.execute()


def _delete_quietly(storage: Storage, prefix: str) -> None:
    try:
        storage.delete_prefix(prefix)
    except Exception:
        log.warning("could not delete %s", prefix, exc_info=True)


def _fail(
    settings: Settings,
    job_id: str,
    status: str,
    error: dict[str, str],
    *,
    fence: int | None = None,
) -> bool:
    with session_scope(settings) as session:
        return jobs.fail(session, job_id, status, error, fence=fence)


def run_job(
    job_id: str,
    *,
    settings: Settings | None = None,
    storage: Storage | None = None,
    message_id: str | None = None,
    takeover: bool = False,
) -> str:
    """Run job ``job_id`` to a final status and return it (idempotent per delivery).

    The claim gives this delivery the job's lease and fencing token (see
    `core.jobs.claim`); a `LeaseKeeper` renews the lease while the job runs, and a
    delivery that finds the lease held by a live owner does nothing ("running").
    ``takeover`` (a message sent because another was lost, e.g. by `serve` at start)
    waits for a live lease to run out once, then claims. Returns "lost" when the
    job was taken over while this delivery ran (it then wrote nothing more).
    """
    settings = settings or get_settings()
    storage = storage or get_storage(settings)
    claim = _claim(job_id, settings, message_id=message_id, takeover=takeover)
    if claim is None:
        return "failed"
    if claim.status in ("failed", "cancelled"):
        _drop_checkpoints(storage, job_id)  # settled by the claim (delivery limit, cancel)
    if not claim.runs:
        return claim.status
    log.info("job %s: delivery %d (fence %d)", job_id, claim.delivery, claim.fence)
    deadline = None
    if claim.started_at is not None:
        deadline = (claim.started_at + timedelta(seconds=settings.job_timeout_s)).timestamp()
    lease = LeaseKeeper(job_id, claim.fence, settings)
    reporter = JobReporter(job_id, settings, fence=claim.fence, deadline=deadline, lease=lease)
    lease.start()
    try:
        return JobRun(job_id, claim, settings, storage, reporter).run()
    finally:
        lease.stop()


def _claim(
    job_id: str, settings: Settings, *, message_id: str | None, takeover: bool
) -> jobs.Claim | None:
    """The claim of this delivery (None: the job could not even start and was failed)."""
    for attempt in range(2):
        try:
            with session_scope(settings) as session:
                claim = jobs.claim(
                    session,
                    job_id,
                    max_deliveries=settings.max_deliveries,
                    message_id=message_id,
                    takeover=takeover,
                    worker=worker_name(),
                    lease_ttl_s=settings.lease_ttl_s,
                )
        except errors.MetaClusterError as exc:
            _fail(settings, job_id, "failed", {"code": exc.code, "message": exc.message})
            return None
        if not (claim.duplicate and takeover and attempt == 0 and claim.lease_expires_at):
            return claim
        # A takeover message: the old owner may be gone without having released its
        # lease (killed with its `serve`); wait once for the lease to run out.
        wait_s = (claim.lease_expires_at - utcnow()).total_seconds() + 0.5
        wait_s = min(max(wait_s, 0.0), settings.lease_ttl_s + 1.0)
        log.warning("job %s: leased by a live owner; waiting %.1f s to take over", job_id, wait_s)
        time.sleep(wait_s)
    return claim


def _drop_checkpoints(storage: Storage, job_id: str) -> None:
    # Checkpoints exist only to resume an unfinished job; a finished one (succeeded,
    # failed or cancelled) frees the space, and no empty folder stays behind.
    try:
        storage.delete_prefix(checkpoints_key(job_id))
    except OSError:
        log.warning("could not delete the checkpoints of job %s", job_id, exc_info=True)


__all__ = [
    "JobReporter",
    "JobRun",
    "LeaseKeeper",
    "run_job",
    "warm_up",
]
