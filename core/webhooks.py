"""Webhooks: which job changes are sent where, signed how, retried when.

A job may carry ``webhook_url`` and ``webhook_events`` (`EVENTS`). The job state
machine (`core.jobs`) calls `job_changed` inside the transaction of each change; that
writes a `WebhookDelivery` row (an outbox: the message exists exactly when the change
committed). The workers' sender (`worker.webhooks`) takes due rows (`claim_due`),
POSTs them signed with the owner's secrets (Standard Webhooks, `metacluster.webhooks`)
and records each attempt (`record_attempt`): a ``webhook`` job event, and the next try
after an exponential backoff, until `Settings.webhook_max_attempts`.

URLs on loopback, private, link-local or otherwise non-global addresses are refused
(at job creation and again before every attempt, since DNS may change) unless
``METACLUSTER_WEBHOOK_ALLOW_PRIVATE=1``.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from core.db.base import utcnow
from core.db.models import Job, WebhookDelivery, new_id
from core.repositories import (
    ApiKeyRepository,
    ArtifactRepository,
    JobEventRepository,
    JobView,
    WebhookDeliveryRepository,
    job_url,
)
from core.settings import Settings
from metacluster.errors import InputError
from metacluster.webhooks import new_secret

EVENTS = ("started", "stage", "succeeded", "failed", "cancelled")
DEFAULT_EVENTS = ("succeeded", "failed", "cancelled")
# Headline numbers a webhook carries (the whole report is at the job's URL).
HEADLINE_METRICS = (
    "metric",
    "before",
    "after",
    "k",
    "bytes_before",
    "bytes_after",
    "ratio",
    "param_ratio",
)
MAX_URL_LENGTH = 2048

Resolver = Callable[[str, int], Sequence[str]]


class WebhookURLError(InputError, code="invalid_webhook_url"):
    """A webhook URL that is malformed, does not resolve, or points inside the network."""


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def refused_address(address: str) -> str | None:
    """Why a resolved address is no place for a webhook (None when it is global)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for attr in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{attr}"):
            return attr.replace("_", "-")
    if not ip.is_global:
        return "not global"
    return None


def check_url(url: str, *, allow_private: bool, resolve: Resolver | None = None) -> str:
    """The URL when webhooks may be sent to it; `WebhookURLError` (422) otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookURLError(f"webhook_url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookURLError(f"webhook_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookURLError("webhook_url must be an http:// or https:// URL with a host")
    if allow_private:
        return url
    host = parts.hostname
    try:
        addresses = (resolve or _resolve)(host, port)
    except OSError as exc:
        raise WebhookURLError(f"webhook_url host {host!r} does not resolve: {exc}") from None
    if not addresses:
        raise WebhookURLError(f"webhook_url host {host!r} does not resolve")
    for address in addresses:
        why = refused_address(address)
        if why is not None:
            raise WebhookURLError(
                f"webhook_url host {host!r} resolves to {address} ({why}); webhooks go to "
                "public addresses only (METACLUSTER_WEBHOOK_ALLOW_PRIVATE=1 allows others)"
            )
    return url


def check_events(events: Sequence[str] | None) -> list[str]:
    """The subscribed events (default: the final ones), each one of `EVENTS`."""
    if events is None:
        return list(DEFAULT_EVENTS)
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise WebhookURLError(
            f"unknown webhook_events {unknown}; choose from {', '.join(EVENTS)}",
            code="invalid_webhook_events",
        )
    return [e for e in EVENTS if e in events]


# -- secrets -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Secrets:
    current: str
    previous: str | None
    previous_until: datetime | None

    def in_force(self, now: datetime) -> list[str]:
        """The secrets that sign a message now: the current one, and the previous one
        during its grace period."""
        out = [self.current]
        if self.previous and self.previous_until is not None and now < self.previous_until:
            out.append(self.previous)
        return out


def secrets_of(session: Session, key_id: str, grace_s: float) -> Secrets:
    """The key's signing secrets; the first call makes its secret."""
    key = ApiKeyRepository(session).lock(key_id)
    if key is None:
        raise InputError(f"API key {key_id} not found", code="not_found")
    if key.webhook_secret is None:
        key.webhook_secret = new_secret()
        session.flush()
    until = None
    if key.webhook_secret_rotated_at is not None:
        until = key.webhook_secret_rotated_at + timedelta(seconds=grace_s)
    return Secrets(key.webhook_secret, key.webhook_secret_previous, until)


def rotate_secret(session: Session, key_id: str, grace_s: float) -> Secrets:
    """A new current secret; the old one keeps signing for `grace_s`."""
    old = secrets_of(session, key_id, grace_s)
    key = ApiKeyRepository(session).lock(key_id)
    assert key is not None
    key.webhook_secret_previous = old.current
    key.webhook_secret = new_secret()
    key.webhook_secret_rotated_at = utcnow()
    session.flush()
    return secrets_of(session, key_id, grace_s)


# -- the outbox --------------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


# What a webhook's ``data`` leaves out of the job the API shows (`JobView.public`): the
# request's config and the service's bookkeeping.
NOT_IN_WEBHOOKS = frozenset(
    {"config", "queue", "cancel_requested", "deliveries", "webhook_url", "webhook_events"}
)


def job_payload(session: Session, job: Job) -> dict[str, Any]:
    """What a webhook says about a job: the job as the API shows it (`JobView.public`)
    without `NOT_IN_WEBHOOKS`, its headline metrics only, and its own url."""
    view = JobView.of(job, ArtifactRepository(session).of_job(job.id))
    data = {k: v for k, v in view.public().items() if k not in NOT_IN_WEBHOOKS}
    metrics = data["metrics"] or None
    data.update(
        progress=round(data["progress"], 6),
        metrics={k: metrics[k] for k in HEADLINE_METRICS if k in metrics} if metrics else None,
        url=job_url(job.id),
        **{k: _iso(data[k]) for k in ("created_at", "started_at", "finished_at")},
    )
    return data


def job_changed(session: Session, job: Job, event: str) -> WebhookDelivery | None:
    """Queue a webhook for `event` of `job` when the job subscribed to it (called by
    `core.jobs` inside the transaction of the change)."""
    if not job.webhook_url or event not in (job.webhook_events or ()):
        return None
    now = utcnow()
    body = {"type": f"job.{event}", "timestamp": _iso(now), "data": job_payload(session, job)}
    delivery = WebhookDelivery(
        id=new_id("msg"),
        job_id=job.id,
        event=f"job.{event}",
        url=job.webhook_url,
        body=json.dumps(body, separators=(",", ":"), sort_keys=True, default=str),
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    return WebhookDeliveryRepository(session).add(delivery)


@dataclass(frozen=True)
class Outgoing:
    """One attempt to make: what to send, where, signed with which secrets."""

    id: str
    job_id: str
    event: str
    url: str
    body: bytes
    attempt: int
    secrets: list[str]


def claim_due(session: Session, settings: Settings, limit: int = 20) -> list[Outgoing]:
    """Due deliveries, each leased to this sender: its next attempt moves past the
    request timeout, so a sender that dies mid-attempt leaves it to another later."""
    now = utcnow()
    lease = timedelta(seconds=settings.webhook_timeout_s + 30)
    out = []
    for row in WebhookDeliveryRepository(session).due(now, limit):
        job = session.get(Job, row.job_id)
        if job is None:
            continue
        row.attempts += 1
        row.next_attempt_at = now + lease
        keys = secrets_of(session, job.owner_id, settings.webhook_secret_grace_s)
        out.append(
            Outgoing(
                row.id,
                row.job_id,
                row.event,
                row.url,
                row.body.encode(),
                row.attempts,
                keys.in_force(now),
            )
        )
    session.flush()
    return out


def backoff_s(attempt: int, settings: Settings) -> float:
    """Wait after failed attempt number `attempt` (1, 2, ...): base, 2 base, 4 base, ..."""
    return float(
        min(settings.webhook_retry_max_s, settings.webhook_retry_base_s * 2 ** (attempt - 1))
    )


def record_attempt(
    session: Session,
    outgoing: Outgoing,
    settings: Settings,
    *,
    status_code: int | None,
    error: str | None,
) -> str:
    """Settle an attempt: delivered (2xx), retried later, or failed for good; writes a
    ``webhook`` job event. Returns the delivery's status."""
    row = WebhookDeliveryRepository(session).get(outgoing.id, for_update=True)
    if row is None:  # the job (and its deliveries) was deleted meanwhile
        return "gone"
    ok = error is None and status_code is not None and 200 <= status_code < 300
    now = utcnow()
    data: dict[str, Any] = {
        "delivery": row.id,
        "event": row.event,
        "attempt": outgoing.attempt,
        "status_code": status_code,
        "ok": ok,
    }
    outcome = f"HTTP {status_code}" if status_code is not None else "no response"
    if ok:
        row.status, row.finished_at, row.last_error = "delivered", now, None
        message = f"webhook {row.event} delivered ({outcome}, attempt {outgoing.attempt})"
    else:
        row.last_error = (error or outcome)[:1000]
        data["error"] = row.last_error
        if outgoing.attempt >= settings.webhook_max_attempts:
            row.status, row.finished_at = "failed", now
            message = (
                f"webhook {row.event} failed ({row.last_error}); gave up after "
                f"{outgoing.attempt} attempts"
            )
        else:
            wait = backoff_s(outgoing.attempt, settings)
            row.next_attempt_at = now + timedelta(seconds=wait)
            data["retry_in_s"] = wait
            message = (
                f"webhook {row.event} attempt {outgoing.attempt} failed ({row.last_error}); "
                f"retry in {wait:.0f} s"
            )
    JobEventRepository(session).add(row.job_id, "webhook", message=message, data=data)
    return row.status


__all__ = [
    "DEFAULT_EVENTS",
    "EVENTS",
    "Outgoing",
    "Secrets",
    "WebhookURLError",
    "backoff_s",
    "check_events",
    "check_url",
    "claim_due",
    "job_changed",
    "job_payload",
    "record_attempt",
    "refused_address",
    "rotate_secret",
    "secrets_of",
]
