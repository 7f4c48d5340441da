"""The webhook sender of a worker process: POSTs due webhook messages, signed.

`core.webhooks` holds the outbox (which messages, when, signed with what); this module
makes the HTTP requests. Every worker runs one sender thread (`worker.maintenance`),
so messages go out while the worker's main thread runs a job. Redirects are not
followed, and the URL's addresses are checked again before every attempt (DNS may
have changed since the job was created).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core import webhooks
from core.settings import Settings
from metacluster import __version__
from metacluster.webhooks import sign_headers

log = logging.getLogger(__name__)

USER_AGENT = f"MetaCluster-Webhooks/{__version__}"


def send(
    outgoing: webhooks.Outgoing, settings: Settings, client: httpx.Client
) -> tuple[int | None, str | None]:
    """One attempt: (HTTP status, None) on a response, (None, why) when none came."""
    try:
        if not settings.webhook_allow_private:
            webhooks.check_url(outgoing.url, allow_private=False)
    except webhooks.WebhookURLError as exc:
        return None, exc.message
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **sign_headers(outgoing.secrets, outgoing.id, outgoing.body),
    }
    try:
        response = client.post(outgoing.url, content=outgoing.body, headers=headers)
    except httpx.HTTPError as exc:
        host = urlsplit(outgoing.url).hostname
        return None, f"{type(exc).__name__} talking to {host}: {exc}"[:500]
    return response.status_code, None


def deliver_due(settings: Settings, engine: Engine, client: httpx.Client) -> int:
    """Send every due message once; returns how many were attempted."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        due = webhooks.claim_due(session, settings)
    for outgoing in due:
        status_code, error = send(outgoing, settings, client)
        with Session(engine, expire_on_commit=False) as session, session.begin():
            outcome = webhooks.record_attempt(
                session, outgoing, settings, status_code=status_code, error=error
            )
        log.info(
            "webhook %s %s of job %s attempt %d -> %s (%s)",
            outgoing.id,
            outgoing.event,
            outgoing.job_id,
            outgoing.attempt,
            status_code if status_code is not None else error,
            outcome,
        )
    return len(due)


def make_client(settings: Settings) -> httpx.Client:
    """The sender's HTTP client: a timeout, no redirects, no environment proxies."""
    return httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False)


__all__ = ["deliver_due", "make_client", "send"]
