"""Re-enqueue of jobs whose enqueue was lost, on SQLite and PostgreSQL, to a real broker.

Jobs are created through the API (with a recording enqueuer standing in for a lost send), then aged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import CONFIG, RecordingEnqueuer, set_job, upload_dataset, upload_model
from sqlalchemy import Engine, select, update

from core.db import Job, JobEvent, session_scope, utcnow
from core.db.session import get_engine
from core.producer import TASK_COMPRESS, get_celery
from core.settings import Settings
from worker.recovery import RequeueTimer, producer_send, requeue_stale_jobs

HOUR = timedelta(hours=1)


class Sent:
    """Records (job_id, queue) instead of talking to a broker."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, job_id: str, queue: str) -> None:
        self.calls.append((job_id, queue))


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return get_engine(settings)


@pytest.fixture(autouse=True)
def no_other_queued_jobs(settings: Settings) -> None:
    # The database lives for the whole test session: settle queued jobs of earlier
    # tests, so each test here sees exactly the jobs it made.
    with session_scope(settings) as s:
        s.execute(
            update(Job)
            .where(Job.status == "queued")
            .values(status="cancelled", finished_at=utcnow())
        )


@pytest.fixture
def make_job(
    client: TestClient, auth: dict[str, str], settings: Settings, enqueuer: RecordingEnqueuer
) -> Iterator[Any]:
    inputs = {"model_id": upload_model(client, auth), "dataset": upload_dataset(client, auth)}

    def make(age: timedelta = timedelta(0), **fields: Any) -> str:
        r = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG})
        assert r.status_code == 202, r.text
        job_id = str(r.json()["id"])
        # The API "sent" it (recorded, no broker): as if the process died right after.
        assert enqueuer.calls[-1][0] == job_id
        backdate(settings, job_id, age)
        if fields:
            set_job(settings, job_id, **fields)
        return job_id

    yield make


def backdate(settings: Settings, job_id: str, age: timedelta) -> None:
    """Move the job's creation and all its events ``age`` into the past."""
    with session_scope(settings) as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.created_at = job.created_at - age
        for event in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id)):
            event.at = event.at - age


def requeue_events(settings: Settings, job_id: str) -> list[dict[str, Any]]:
    with session_scope(settings) as s:
        rows = s.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "log")
        ).all()
        return [
            {"seq": e.seq, "message": e.message, "data": e.data}
            for e in rows
            if (e.data or {}).get("requeued")
        ]


def test_only_old_undelivered_queued_jobs_are_sent_again(
    make_job: Any, settings: Settings, engine: Engine
) -> None:
    assert settings.requeue_after_s == 600.0  # the default
    stale = make_job(2 * HOUR)
    fresh = make_job()
    delivered = make_job(2 * HOUR, status="running", deliveries=1)
    retried = make_job(2 * HOUR, deliveries=1)  # queued again by a Celery retry
    finished = make_job(2 * HOUR, status="cancelled", finished_at=utcnow())
    just_under = make_job(timedelta(seconds=540))

    sent = Sent()
    assert requeue_stale_jobs(settings, engine, send=sent) == [stale]
    assert sent.calls == [(stale, "cpu")]
    (event,) = requeue_events(settings, stale)
    assert event["seq"] == 2 and "600 s" in str(event["message"])
    for job_id in (fresh, delivered, retried, finished, just_under):
        assert requeue_events(settings, job_id) == []
    with session_scope(settings) as s:
        row = s.get(Job, stale)
        assert row is not None and (row.status, row.deliveries) == ("queued", 0)


def test_a_job_is_sent_again_at_most_once_per_period(
    make_job: Any, settings: Settings, engine: Engine
) -> None:
    stale = make_job(2 * HOUR)
    sent = Sent()
    assert requeue_stale_jobs(settings, engine, send=sent) == [stale]
    # Still undelivered (e.g. a long backlog): the re-enqueue event holds it back...
    assert requeue_stale_jobs(settings, engine, send=sent) == []
    # ...until it is itself older than the threshold.
    backdate(settings, stale, 2 * HOUR)
    assert requeue_stale_jobs(settings, engine, send=sent) == [stale]
    assert sent.calls == [(stale, "cpu"), (stale, "cpu")]
    assert [e["seq"] for e in requeue_events(settings, stale)] == [2, 3]


def test_a_running_job_whose_lease_expired_is_sent_again_once(
    make_job: Any, settings: Settings, engine: Engine
) -> None:
    """Its owner died and no message is left (acknowledged as a duplicate, or a broker
    that does not re-deliver): the sweep sends one; a live lease is left alone."""
    now = utcnow()
    grace = 2 * settings.lease_ttl_s
    orphan = make_job(
        2 * HOUR,
        status="running",
        deliveries=1,
        fence=1,
        lease_expires_at=now - timedelta(seconds=grace + 60),
    )
    alive = make_job(
        2 * HOUR,
        status="running",
        deliveries=1,
        fence=1,
        lease_expires_at=now + timedelta(seconds=30),
    )
    just_expired = make_job(
        2 * HOUR,
        status="running",
        deliveries=1,
        fence=1,
        lease_expires_at=now - timedelta(seconds=1),
    )
    sent = Sent()
    assert requeue_stale_jobs(settings, engine, send=sent) == [orphan]
    (event,) = requeue_events(settings, orphan)
    assert event["data"] == {"requeued": True, "takeover": True}
    for job_id in (alive, just_expired):
        assert requeue_events(settings, job_id) == []
    # The event holds it back for another period.
    assert requeue_stale_jobs(settings, engine, send=sent) == []


def test_threshold_is_a_setting(make_job: Any, settings: Settings, engine: Engine) -> None:
    job_id = make_job(timedelta(seconds=90))
    sent = Sent()
    assert requeue_stale_jobs(settings, engine, send=sent) == []
    quick = settings.model_copy(update={"requeue_after_s": 60.0})
    assert requeue_stale_jobs(quick, engine, send=sent) == [job_id]


def test_a_failed_send_is_retried_by_a_later_sweep(
    make_job: Any, settings: Settings, engine: Engine
) -> None:
    stale = make_job(2 * HOUR)

    def broken(job_id: str, queue: str) -> None:
        raise ConnectionError("broker down")

    assert requeue_stale_jobs(settings, engine, send=broken) == []
    backdate(settings, stale, 2 * HOUR)
    sent = Sent()
    assert requeue_stale_jobs(settings, engine, send=sent) == [stale]


def test_the_message_reaches_the_broker(
    make_job: Any, broker_settings: Settings, settings: Settings, engine: Engine
) -> None:
    stale = make_job(2 * HOUR)
    queue = broker_settings.cpu_queue
    # The job row names its queue; point it at this run's queue on the real broker.
    with session_scope(settings) as s:
        s.execute(update(Job).where(Job.id == stale).values(queue=queue))
    assert requeue_stale_jobs(broker_settings, engine, send=producer_send(broker_settings)) == [
        stale
    ]
    with get_celery(broker_settings).connection_for_read() as conn:
        q = conn.SimpleQueue(queue)
        try:
            msg = q.get(timeout=10)
            msg.ack()
        finally:
            q.close()
    assert msg.headers["task"] == TASK_COMPRESS
    args, kwargs, _ = msg.decode()
    # A plain message: the runner lets it run only if no other message claimed the job.
    assert (args, kwargs) == ([stale], {})


def test_timer_sweeps_at_start_and_every_interval_and_stops(
    make_job: Any, settings: Settings
) -> None:
    first = make_job(2 * HOUR)
    sent = Sent()
    timer = RequeueTimer(
        settings.model_copy(update={"requeue_interval_s": 0.1, "requeue_after_s": 600.0}),
        send=sent,
    )
    timer.start()
    try:
        deadline = time.monotonic() + 10
        while not sent.calls and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sent.calls == [(first, "cpu")]
        second = make_job(2 * HOUR)
        while len(sent.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sent.calls == [(first, "cpu"), (second, "cpu")]
    finally:
        started = time.monotonic()
        timer.stop()
        assert not timer.is_alive() and time.monotonic() - started < 2
