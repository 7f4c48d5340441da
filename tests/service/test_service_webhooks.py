"""Webhooks in the API and the job state machine: URL checks (no SSRF), the key's secret
and its rotation, the outbox rows each subscribed change writes, and the sender's
retry schedule (`core.webhooks.record_attempt`). Signing is `metacluster.webhooks`.

The real deliveries (a local receiver, a real worker) are tests/integration/test_webhooks.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import CONFIG, assert_problem, upload_dataset, upload_model

from core import jobs, webhooks
from core.db import Job, WebhookDelivery, session_scope, utcnow
from core.repositories import WebhookDeliveryRepository
from core.settings import Settings
from metacluster.webhooks import (
    WebhookVerificationError,
    new_secret,
    sign_headers,
    signature,
    verify,
)


@pytest.fixture
def inputs(client: TestClient, auth: dict[str, str]) -> dict[str, str]:
    return {"model_id": upload_model(client, auth), "dataset": upload_dataset(client, auth)}


def _resolver(*addresses: str) -> Any:
    return lambda host, port: list(addresses)


# -- URL checks ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not global"),  # carrier-grade NAT
        ("224.0.0.1", "multicast"),
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(address: str, why: str) -> None:
    with pytest.raises(webhooks.WebhookURLError, match=why):
        webhooks.check_url(
            "https://hooks.example/x", allow_private=False, resolve=_resolver(address)
        )
    # ... unless the deployment allows them (tests, an intranet receiver).
    assert webhooks.check_url("https://hooks.example/x", allow_private=True) == (
        "https://hooks.example/x"
    )


def test_a_host_with_one_private_address_among_public_ones_is_refused() -> None:
    good = _resolver("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    assert webhooks.check_url("https://a.example/h", allow_private=False, resolve=good)
    with pytest.raises(webhooks.WebhookURLError, match=r"10\.0\.0\.5"):
        webhooks.check_url(
            "https://a.example/h",
            allow_private=False,
            resolve=_resolver("93.184.216.34", "10.0.0.5"),
        )


@pytest.mark.parametrize(
    "url", ["ftp://x.example/", "file:///etc/passwd", "http://", "https://[::1", "x" * 3000]
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(webhooks.WebhookURLError):
        webhooks.check_url(url, allow_private=True)


def test_unresolvable_hosts_are_refused() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(webhooks.WebhookURLError, match="does not resolve"):
        webhooks.check_url("https://nope.invalid/", allow_private=False, resolve=fail)


def test_the_api_refuses_a_loopback_webhook_by_default(
    client: TestClient, auth: dict[str, str], inputs: dict[str, str]
) -> None:
    for url in ("http://127.0.0.1:9/hook", "http://localhost/hook", "http://[::1]/"):
        body = {**inputs, "config": CONFIG, "webhook_url": url}
        assert_problem(client.post("/v1/jobs", headers=auth, json=body), 422, "invalid_webhook_url")
        dry = client.post("/v1/jobs?dry_run=true", headers=auth, json=body)
        assert_problem(dry, 422, "invalid_webhook_url")
    bad_events = {**inputs, "webhook_url": "http://127.0.0.1/", "webhook_events": ["finished"]}
    assert_problem(client.post("/v1/jobs", headers=auth, json=bad_events), 422, "validation_error")
    no_url = {**inputs, "webhook_events": ["succeeded"]}
    assert_problem(client.post("/v1/jobs", headers=auth, json=no_url), 422, "invalid_config")


# -- signing -----------------------------------------------------------------------------
def test_signature_is_standard_webhooks_hmac_of_id_timestamp_body() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    body = b'{"type":"job.succeeded"}'
    expected = base64.b64encode(
        hmac.new(base64.b64decode(secret[6:]), b"msg_1.1700000000." + body, hashlib.sha256).digest()
    ).decode()
    assert signature(secret, "msg_1", 1700000000, body) == f"v1,{expected}"
    headers = sign_headers([secret, new_secret()], "msg_1", body, timestamp=1700000000)
    assert headers["webhook-id"] == "msg_1" and headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"].split()[0] == f"v1,{expected}"
    assert verify(body, headers, secret, now=1700000100) == {"type": "job.succeeded"}
    with pytest.raises(WebhookVerificationError, match="replay"):
        verify(body, headers, secret, now=1700000000 + 301)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(body, {"webhook-id": "msg_1"}, secret)


# -- the key's secret --------------------------------------------------------------------
def test_secret_is_made_on_first_use_and_rotation_keeps_the_old_one_for_a_while(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], settings: Settings
) -> None:
    first = client.get("/v1/webhooks/secret", headers=auth).json()
    assert first["secret"].startswith("whsec_") and first["previous"] is None
    assert client.get("/v1/webhooks/secret", headers=auth).json()["secret"] == first["secret"]
    assert client.get("/v1/webhooks/secret", headers=other_auth).json()["secret"] != first["secret"]
    rotated = client.post("/v1/webhooks/secret/rotate", headers=auth).json()
    assert rotated["secret"] != first["secret"] and rotated["previous"] == first["secret"]
    assert rotated["previous_expires_at"] is not None
    assert_problem(client.get("/v1/webhooks/secret"), 401, "unauthorized")

    # Both sign until the grace period ends; then only the new one.
    from core.db import ApiKey

    with session_scope(settings) as s:
        key = s.query(ApiKey).filter(ApiKey.webhook_secret == rotated["secret"]).one()
        now = utcnow()
        keys = webhooks.secrets_of(s, key.id, settings.webhook_secret_grace_s)
        assert keys.in_force(now) == [rotated["secret"], first["secret"]]
        later = now + timedelta(seconds=settings.webhook_secret_grace_s + 1)
        assert keys.in_force(later) == [rotated["secret"]]


# -- the outbox --------------------------------------------------------------------------
def _deliveries(settings: Settings, job_id: str) -> list[WebhookDelivery]:
    with session_scope(settings) as s:
        rows = WebhookDeliveryRepository(s).of_job(job_id)
        for row in rows:
            s.expunge(row)
        return rows


def _job_with_webhook(
    client: TestClient, auth: dict[str, str], inputs: dict[str, str], events: list[str]
) -> str:
    body = {
        **inputs,
        "config": CONFIG,
        "webhook_url": "https://hooks.example/metacluster",
        "webhook_events": events,
    }
    r = client.post("/v1/jobs", headers=auth, json=body)
    assert r.status_code == 202, r.text
    assert r.json()["webhook_url"] == body["webhook_url"]
    return str(r.json()["id"])


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """hooks.example resolves to a public address (no DNS in tests)."""
    monkeypatch.setattr(webhooks, "_resolve", _resolver("93.184.216.34"))


@pytest.mark.usefixtures("public_dns")
def test_each_subscribed_change_writes_one_message_in_its_transaction(
    client: TestClient, auth: dict[str, str], inputs: dict[str, str], settings: Settings
) -> None:
    job_id = _job_with_webhook(client, auth, inputs, ["started", "stage", "succeeded"])
    assert _deliveries(settings, job_id) == []  # "queued" is no subscribed event
    with session_scope(settings) as s:
        fence = jobs.claim(s, job_id, max_deliveries=3).fence
    with session_scope(settings) as s:
        for kind, stage in (("stage", "meta"), ("progress", "meta"), ("stage", "kmeans")):
            jobs.record_progress(
                s,
                job_id,
                fence=fence,
                kind=kind,
                stage=stage,
                progress=0.5,
                loss=None,
                message="m",
            )
    with session_scope(settings) as s:
        jobs.succeed(s, job_id, {"metric": "accuracy", "ratio": 9.5, "layers": []}, [], fence=fence)
    rows = _deliveries(settings, job_id)
    assert [r.event for r in rows] == ["job.started", "job.stage", "job.stage", "job.succeeded"]
    assert len({r.id for r in rows}) == 4 and all(r.status == "pending" for r in rows)
    body = json.loads(rows[-1].body)
    assert body["type"] == "job.succeeded" and body["data"]["id"] == job_id
    assert body["data"]["metrics"] == {"metric": "accuracy", "ratio": 9.5}  # headline only
    assert body["data"]["url"] == f"/v1/jobs/{job_id}"

    # A cancel of a queued job (the API's own transition) is an event too.
    other = _job_with_webhook(client, auth, inputs, ["cancelled"])
    assert client.post(f"/v1/jobs/{other}/cancel", headers=auth).json()["status"] == "cancelled"
    assert [r.event for r in _deliveries(settings, other)] == ["job.cancelled"]


@pytest.mark.usefixtures("public_dns")
def test_failed_attempts_back_off_exponentially_then_give_up(
    client: TestClient, auth: dict[str, str], inputs: dict[str, str], settings: Settings
) -> None:
    settings = settings.model_copy(update={"webhook_max_attempts": 3, "webhook_retry_base_s": 10.0})
    job_id = _job_with_webhook(client, auth, inputs, ["cancelled"])
    client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    waits = []
    for attempt in (1, 2, 3):
        with session_scope(settings) as s:
            # Make it due now, as the clock would.
            for row in WebhookDeliveryRepository(s).of_job(job_id):
                row.next_attempt_at = utcnow()
        with session_scope(settings) as s:
            # The database is shared by this session's tests: keep to this job's message.
            (out,) = [o for o in webhooks.claim_due(s, settings, 1000) if o.job_id == job_id]
            assert out.attempt == attempt and out.secrets
        with session_scope(settings) as s:
            # While one sender holds it, nobody else takes it.
            assert job_id not in [o.job_id for o in webhooks.claim_due(s, settings, 1000)]
        with session_scope(settings) as s:
            status = webhooks.record_attempt(s, out, settings, status_code=503, error=None)
        (row,) = _deliveries(settings, job_id)
        if attempt < 3:
            assert status == "pending"
            waits.append((row.next_attempt_at - utcnow()).total_seconds())
    assert status == "failed" and row.finished_at is not None and row.last_error == "HTTP 503"
    assert 9 < waits[0] <= 10 and 19 < waits[1] <= 20  # base, then twice the base
    r = client.get(f"/v1/jobs/{job_id}/events", headers=auth).json()["items"]
    recorded = [e["data"] for e in r if e["kind"] == "webhook"]
    assert [(d["attempt"], d["ok"]) for d in recorded] == [(1, False), (2, False), (3, False)]
    assert "gave up" in [e for e in r if e["kind"] == "webhook"][-1]["message"]


def test_backoff_is_capped() -> None:
    s = Settings(webhook_retry_base_s=5, webhook_retry_max_s=60)
    assert [webhooks.backoff_s(a, s) for a in (1, 2, 3, 4, 5, 6)] == [5, 10, 20, 40, 60, 60]


def test_jobs_without_a_webhook_write_no_messages(
    client: TestClient, auth: dict[str, str], inputs: dict[str, str], settings: Settings
) -> None:
    r = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG})
    job_id = r.json()["id"]
    client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert _deliveries(settings, job_id) == []
    with session_scope(settings) as s:
        assert s.get(Job, job_id).webhook_events is None  # type: ignore[union-attr]
