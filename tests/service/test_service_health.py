"""healthz, readyz (real database and broker checks) and Prometheus metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import CONFIG, set_job, upload_dataset, upload_model

from core.db import utcnow
from core.settings import Settings
from service.app import create_app


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_ok_with_reachable_database_and_broker(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


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


def test_metrics(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
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

    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = _samples(r.text)
    # The database is shared by the whole test session: compare with its own counts.
    from core.db import session_scope
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
