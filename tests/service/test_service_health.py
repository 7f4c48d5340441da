"""healthz, readyz (real database and broker checks) and Prometheus metrics."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from service_helpers import CONFIG, RecordingEnqueuer, set_job, upload_dataset, upload_model

from core import heartbeats
from core.db import session_scope, utcnow
from core.settings import Settings
from service.app import create_app
from service.deps import get_enqueuer
from service.supervisor import WorkerSupervisor

METRICS_TOKEN = "metrics-t0ken"


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def _beat(settings: Settings, name: str = "test-worker") -> None:
    with session_scope(settings) as s:
        heartbeats.beat(s, name)


def test_readyz_ok_with_reachable_database_broker_and_a_worker(
    client: TestClient, settings: Settings
) -> None:
    _beat(settings)
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "worker": "ok"},
    }


def test_readyz_is_503_without_a_recent_worker_heartbeat(settings: Settings) -> None:
    # heartbeats every 10 ms: the one written a moment ago is already stale
    with TestClient(create_app(settings.model_copy(update={"worker_heartbeat_s": 0.01}))) as c:
        _beat(settings)
        time.sleep(0.1)
        r = c.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["checks"]["database"] == body["checks"]["broker"] == "ok"
    assert "no worker heartbeat" in body["checks"]["worker"]


def test_readyz_follows_the_embedded_worker_process(client: TestClient) -> None:
    """In `serve`, the worker check is the supervisor's: its child process is running."""
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    supervisor = WorkerSupervisor(lambda: worker, restart_delay_s=60).install()
    try:
        assert client.get("/readyz").json()["checks"]["worker"] == "ok"
        worker.kill()
        wait = time.monotonic() + 10
        while supervisor.state() == "ok" and time.monotonic() < wait:
            time.sleep(0.05)
        r = client.get("/readyz")
        assert r.status_code == 503
        assert "killed by SIGKILL; restarting" in r.json()["checks"]["worker"]
    finally:
        supervisor.stop(lambda proc: None)
    assert worker.poll() is not None  # reaped: no zombie left


def test_readyz_reports_unreachable_broker(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"broker_url": "redis://127.0.0.1:1/0", "broker_timeout_s": 0.5}
    )
    with TestClient(create_app(broken)) as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable" and body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("error")


def test_readyz_reports_unreachable_database(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"}
    )
    with TestClient(create_app(broken)) as client:
        r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["database"].startswith("error")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def metrics_client(settings: Settings, enqueuer: RecordingEnqueuer) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)}))
    app.dependency_overrides[get_enqueuer] = lambda: enqueuer
    with TestClient(app) as c:
        yield c


def test_metrics(metrics_client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    client = metrics_client
    inputs = {"model_id": upload_model(client, auth), "dataset": upload_dataset(client, auth)}
    ids = [
        client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG}).json()["id"]
        for _ in range(3)
    ]
    set_job(
        settings,
        ids[0],
        status="succeeded",
        finished_at=utcnow(),
        metrics={"stages": {"meta": 3.0, "kmeans": 0.2, "finetune": 1.5}},
    )
    client.post(f"/v1/jobs/{ids[1]}/cancel", headers=auth)
    client.get("/v1/jobs/job_missing", headers=auth)

    r = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = _samples(r.text)
    # The database is shared by the whole test session: compare with its own counts.
    from core.repositories import JobRepository

    with session_scope(settings) as s:
        counts = JobRepository(s).count_by_status()
    for status in ("queued", "succeeded", "cancelled"):
        assert samples[("metacluster_jobs", (("status", status),))] == counts[status] >= 1
    route = (("method", "POST"), ("route", "/v1/jobs"), ("status", "202"))
    assert samples[("metacluster_http_requests_total", route)] == 3
    missing = (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "404"))
    assert samples[("metacluster_http_requests_total", missing)] == 1
    latency = (("method", "POST"), ("route", "/v1/jobs"))
    assert samples[("metacluster_http_request_duration_seconds_count", latency)] == 3
    meta = [
        v
        for (name, labels), v in samples.items()
        if name == "metacluster_stage_duration_seconds_count" and ("stage", "meta") in labels
    ]
    assert meta and meta[0] >= 1
    le5 = samples[("metacluster_stage_duration_seconds_bucket", (("le", "5.0"), ("stage", "meta")))]
    le1 = samples[("metacluster_stage_duration_seconds_bucket", (("le", "1.0"), ("stage", "meta")))]
    assert le5 >= 1 and le1 < le5


def test_docs_page_works_offline(client: TestClient) -> None:
    """Swagger UI's assets come from a package, not a CDN: every asset the page names
    is served here, and the page names no other host."""
    import re

    r = client.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert assets and not re.search(r"https?://", r.text)
    for url in assets:
        got = client.get(url)
        assert got.status_code == 200 and len(got.content) > 1000, url
    assert client.get("/openapi.json").json()["openapi"].startswith("3.")
