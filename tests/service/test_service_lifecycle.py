"""Listing and deleting models, datasets and jobs; the retention sweep; the event stream's
framing and resume rules (the live stream over a real socket is in
tests/integration/test_client.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from service_helpers import (
    CONFIG,
    add_artifact,
    assert_problem,
    set_job,
    upload_dataset,
    upload_model,
)

from core import jobs
from core.db import DatasetRecord, Job, JobEvent, ModelRecord, session_scope, utcnow
from core.db.session import make_engine
from core.settings import Settings
from core.storage import dataset_key, get_storage
from worker.maintenance import sweep_retention


def _job(client: TestClient, auth: dict[str, str], model: str, dataset: str) -> str:
    r = client.post(
        "/v1/jobs", headers=auth, json={"model_id": model, "dataset": dataset, "config": CONFIG}
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _finish(settings: Settings, job_id: str, **extra: Any) -> None:
    with session_scope(settings) as s:
        fence = jobs.claim(s, job_id, max_deliveries=3).fence
    with session_scope(settings) as s:
        jobs.succeed(s, job_id, {"metric": "accuracy", "ratio": 3.0}, [], fence=fence)
    if extra:
        set_job(settings, job_id, **extra)


def test_models_and_datasets_are_listed_newest_first_page_by_page(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    models = [upload_model(client, auth) for _ in range(3)]
    datasets = [upload_dataset(client, auth) for _ in range(2)]
    upload_model(client, other_auth)  # someone else's
    seen, after = [], None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if after:
            params["after"] = after
        page = client.get("/v1/models", headers=auth, params=params).json()
        seen += [m["id"] for m in page["items"]]
        if not (after := page["next"]):
            break
    assert seen == models[::-1]
    listed = client.get("/v1/datasets", headers=auth).json()
    assert [d["id"] for d in listed["items"]] == datasets[::-1] and listed["next"] is None
    assert listed["items"][0]["task"] == "classification"
    assert_problem(client.get("/v1/models"), 401, "unauthorized")


def test_delete_a_finished_job_with_its_rows_and_files(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], settings: Settings
) -> None:
    job_id = _job(client, auth, upload_model(client, auth), upload_dataset(client, auth))
    assert_problem(client.delete(f"/v1/jobs/{job_id}", headers=auth), 409, "job_not_finished")
    _finish(settings, job_id)
    add_artifact(settings, job_id, "model.mcz", b"artifact bytes")
    storage = get_storage(settings)
    assert storage.list(f"jobs/{job_id}/")
    assert_problem(client.delete(f"/v1/jobs/{job_id}", headers=other_auth), 404, "not_found")

    r = client.delete(f"/v1/jobs/{job_id}", headers=auth)
    assert r.status_code == 204 and r.content == b""
    assert_problem(client.get(f"/v1/jobs/{job_id}", headers=auth), 404, "not_found")
    assert storage.list(f"jobs/{job_id}/") == []
    with session_scope(settings) as s:
        assert s.query(JobEvent).filter(JobEvent.job_id == job_id).count() == 0
    assert_problem(client.delete(f"/v1/jobs/{job_id}", headers=auth), 404, "not_found")


def test_delete_a_model_refused_while_a_job_uses_it_then_with_its_jobs(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    model, dataset = upload_model(client, auth), upload_dataset(client, auth)
    job_id = _job(client, auth, model, dataset)
    assert_problem(client.delete(f"/v1/models/{model}", headers=auth), 409, "in_use")
    assert_problem(client.delete(f"/v1/datasets/{dataset}", headers=auth), 409, "in_use")
    client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)  # queued -> cancelled at once
    add_artifact(settings, job_id, "model.mcz", b"x")

    assert client.delete(f"/v1/datasets/{dataset}", headers=auth).status_code == 204
    assert get_storage(settings).stat(dataset_key(dataset)) is None
    # The finished job keeps its record of the dataset.
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["dataset"] == dataset

    assert client.delete(f"/v1/models/{model}", headers=auth).status_code == 204
    assert_problem(client.get(f"/v1/models/{model}", headers=auth), 404, "not_found")
    assert_problem(client.get(f"/v1/jobs/{job_id}", headers=auth), 404, "not_found")
    storage = get_storage(settings)
    assert storage.list(f"models/{model}/") == [] and storage.list(f"jobs/{job_id}/") == []


def test_retention_sweep_deletes_what_expired_and_keeps_the_rest(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    settings = settings.model_copy(update={"retention_days": 7})
    old = utcnow() - timedelta(days=8)
    # An old model and dataset whose only job expired: all three go.
    m_old, d_old = upload_model(client, auth), upload_dataset(client, auth)
    j_old = _job(client, auth, m_old, d_old)
    _finish(settings, j_old, finished_at=old)
    add_artifact(settings, j_old, "model.mcz", b"old")
    # An old model with a recent job: kept, with its job.
    m_busy = upload_model(client, auth)
    j_recent = _job(client, auth, m_busy, upload_dataset(client, auth))
    _finish(settings, j_recent)
    # An old model whose job still runs: kept.
    m_running = upload_model(client, auth)
    j_running = _job(client, auth, m_running, upload_dataset(client, auth))
    with session_scope(settings) as s:
        jobs.claim(s, j_running, max_deliveries=3)
    with session_scope(settings) as s:
        for cls, ids in ((ModelRecord, [m_old, m_busy, m_running]), (DatasetRecord, [d_old])):
            for row in s.query(cls).filter(cls.id.in_(ids)):
                row.created_at = old
    fresh = upload_model(client, auth)

    engine = make_engine(settings.db_url)
    try:
        keys = sweep_retention(settings, engine)
    finally:
        engine.dispose()
    assert f"jobs/{j_old}/" in keys and f"models/{m_old}/" in keys
    with session_scope(settings) as s:
        assert s.get(Job, j_old) is None and s.get(ModelRecord, m_old) is None
        assert s.get(DatasetRecord, d_old) is None
        for kept in (m_busy, m_running, fresh):
            assert s.get(ModelRecord, kept) is not None
        assert s.get(Job, j_recent) is not None and s.get(Job, j_running) is not None
    storage = get_storage(settings)
    assert storage.list(f"jobs/{j_old}/") == [] and storage.list(f"models/{m_old}/") == []
    assert storage.list(f"models/{fresh}/")


# -- the event stream ----------------------------------------------------------------------
def _sse_records(text: str) -> list[dict[str, str]]:
    out = []
    for block in text.split("\n\n"):
        record = {}
        for line in block.splitlines():
            name, _, value = line.partition(":")
            record[name or "comment"] = value.lstrip(" ")
        if record:
            out.append(record)
    return out


def test_a_finished_jobs_stream_replays_its_events_and_closes(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    job_id = _job(client, auth, upload_model(client, auth), upload_dataset(client, auth))
    _finish(settings, job_id)
    sse = {**auth, "Accept": "text/event-stream"}
    r = client.get(f"/v1/jobs/{job_id}/events", headers=sse)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    records = [x for x in _sse_records(r.text) if "id" in x]
    assert [int(x["id"]) for x in records] == [1, 2, 3]
    assert [x["event"] for x in records] == ["status", "status", "status"]
    last = json.loads(records[-1]["data"])
    assert last["seq"] == 3 and last["data"]["status"] == "succeeded"
    # The JSON listing is unchanged without the Accept header.
    assert len(client.get(f"/v1/jobs/{job_id}/events", headers=auth).json()["items"]) == 3

    resumed = client.get(f"/v1/jobs/{job_id}/events", headers={**sse, "Last-Event-ID": "1"})
    assert [int(x["id"]) for x in _sse_records(resumed.text) if "id" in x] == [2, 3]
    done = client.get(f"/v1/jobs/{job_id}/events", headers={**sse, "Last-Event-ID": "3"})
    assert [x for x in _sse_records(done.text) if "id" in x] == []

    bad = client.get(f"/v1/jobs/{job_id}/events", headers={**sse, "Last-Event-ID": "x"})
    assert_problem(bad, 422, "validation_error")
    assert_problem(client.get("/v1/jobs/job_nope/events", headers=sse), 404, "not_found")


def test_report_is_served_as_html_and_404_until_there_is_one(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    job_id = _job(client, auth, upload_model(client, auth), upload_dataset(client, auth))
    assert_problem(client.get(f"/v1/jobs/{job_id}/report", headers=auth), 404, "not_found")
    _finish(settings, job_id)
    html = b"<!doctype html><title>r</title>"
    add_artifact(settings, job_id, "report.html", html)
    r = client.get(f"/v1/jobs/{job_id}/report", headers=auth)
    assert r.status_code == 200 and r.content == html
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-disposition"].startswith("inline")
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["report_url"] == (
        f"/v1/jobs/{job_id}/report"
    )


# -- the workers' background duties -------------------------------------------------------
def test_a_periodic_duty_survives_a_failing_tick_and_stops_on_request(settings: Settings) -> None:
    import threading

    from worker.maintenance import Periodic

    calls: list[object] = []
    enough = threading.Event()

    def tick(engine: object) -> None:
        calls.append(engine)
        if len(calls) == 1:
            raise RuntimeError("a database outage")
        if len(calls) >= 3:
            enough.set()

    duty = Periodic("test", settings, 0.01, tick)
    duty.start()
    assert enough.wait(10)
    duty.stop()
    assert not duty.is_alive() and len({id(e) for e in calls}) == 1  # one engine of its own


def test_workers_start_the_webhook_sender_and_with_retention_the_sweep(settings: Settings) -> None:
    from worker import maintenance

    for days, names in (
        (0.0, ["metacluster-heartbeat", "metacluster-webhooks"]),
        (30.0, ["metacluster-heartbeat", "metacluster-webhooks", "metacluster-retention"]),
    ):
        threads = maintenance.start(settings.model_copy(update={"retention_days": days}))
        try:
            assert [t.name for t in threads] == names and all(t.is_alive() for t in threads)
        finally:
            for t in threads:
                t.stop()
