"""The in-process runner's test environment: a SQLite database, local storage, a
trained efficient-kan model and its data, as rows and blobs (no worker processes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from core.db.base import utcnow
from core.db.models import Artifact, Job, JobEvent, new_id
from core.db.session import session_scope
from core.settings import Settings
from core.storage import LocalStorage
from worker.runner import run_job


@dataclass
class Env:
    settings: Settings
    storage: LocalStorage
    owner_id: str
    model_id: str
    dataset_id: str

    def job(self, config: dict[str, Any], **fields: Any) -> str:
        job_id = new_id("job")
        with session_scope(self.settings) as session:
            session.add(
                Job(
                    id=job_id,
                    owner_id=self.owner_id,
                    model_id=self.model_id,
                    dataset=self.dataset_id,
                    config=config,
                    queue="cpu",
                    **fields,
                )
            )
        return job_id

    def row(self, job_id: str) -> Job:
        with session_scope(self.settings) as session:
            job = session.get(Job, job_id)
            assert job is not None
            session.expunge(job)
            return job

    def events(self, job_id: str) -> list[JobEvent]:
        with session_scope(self.settings) as session:
            rows = list(
                session.scalars(
                    select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)
                )
            )
            session.expunge_all()
            return rows

    def artifacts(self, job_id: str) -> list[str]:
        with session_scope(self.settings) as session:
            return sorted(session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)))

    def run(self, job_id: str) -> str:
        return run_job(job_id, settings=self.settings, storage=self.storage)


def _fake_compress(body: Callable[..., Any]) -> Callable[..., Any]:
    def fake(
        model: Any,
        config: Any,
        data: Any,
        *,
        progress: Any,
        should_stop: Any,
        checkpoint: Any,
        sizer: Any,
        on_plan: Any = None,
    ) -> Any:
        if on_plan is not None:  # as the engine: announce the plan before the stages
            from metacluster.compress import plan
            from metacluster.kan import describe_model

            on_plan(plan(describe_model(model), None, config))
        return body(progress, should_stop, checkpoint)

    return fake


def expire_lease(env: Env, job_id: str) -> None:
    """As if the lease period passed without a renewal (the owner is dead)."""
    with session_scope(env.settings) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.lease_expires_at = utcnow() - timedelta(seconds=1)
