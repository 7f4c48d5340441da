"""``/healthz`` (process up), ``/readyz`` (database, broker and a worker), ``/metrics``.

The first two need no API key: orchestrators call them. ``/metrics`` shows aggregates
over every tenant (jobs by status, request counts by route), so it answers only the
operator's ``METACLUSTER_METRICS_TOKEN`` (Prometheus's ``authorization`` setting), never
a tenant's API key; without that setting it is off (404).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from core import heartbeats
from core.db.session import get_engine
from core.service_errors import NotFoundError, UnauthorizedError
from core.settings import Settings
from service.deps import SettingsDep
from service.metrics import Metrics
from service.problems import problem_responses
from service.schemas import HealthOut, ReadyOut
from service.supervisor import current as current_supervisor

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])
WORKER_CHECK_TTL_S = 2.0  # the heartbeat query's answer is reused this long


def check_database(settings: Settings) -> None:
    with get_engine(settings).connect() as conn:
        conn.execute(text("SELECT 1"))


def check_broker(settings: Settings) -> None:
    from kombu.connection import Connection

    timeout = settings.broker_timeout_s
    with Connection(settings.broker, connect_timeout=timeout) as conn:  # type: ignore[no-untyped-call]
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)


def check_heartbeat(settings: Settings) -> None:
    """Some worker wrote a heartbeat recently (`core.heartbeats`)."""
    with get_engine(settings).connect() as conn, Session(bind=conn) as session:
        missing = heartbeats.missing_worker(session, settings.worker_heartbeat_s)
    if missing is not None:
        raise RuntimeError(missing)


class _CachedCheck:
    """A check's outcome, kept ``ttl_s`` (readiness probes come every few seconds
    from every orchestrator node; the answer need not be fresher)."""

    def __init__(self, check: Callable[[Settings], None], ttl_s: float) -> None:
        self.check = check
        self.ttl_s = ttl_s
        self._at = -float("inf")
        self._error: Exception | None = None

    def __call__(self, settings: Settings) -> None:
        now = time.monotonic()
        if now - self._at > self.ttl_s:
            try:
                self.check(settings)
                self._error = None
            except Exception as exc:
                self._error = exc
            self._at = now
        if self._error is not None:
            raise self._error


@router.get("/healthz", response_model=HealthOut, summary="Liveness: the process answers")
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={
        503: {"model": ReadyOut, "description": "Database or broker unreachable, or no worker"}
    },
    summary="Readiness: database and broker reachable, a worker present",
)
async def readyz(request: Request, settings: SettingsDep) -> JSONResponse:
    checks: dict[str, str] = {}
    for name, check in (
        ("database", check_database),
        ("broker", check_broker),
        ("worker", _worker_check(request)),
    ):
        try:
            await run_in_threadpool(check, settings)
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readiness check %s failed: %r", name, exc)
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    ok = all(v == "ok" for v in checks.values())
    body = ReadyOut(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


def _worker_check(request: Request) -> Callable[[Settings], None]:
    """In `metacluster serve`: its worker process is running (`service.supervisor`);
    elsewhere: a worker's heartbeat is recent (cached `WORKER_CHECK_TTL_S`)."""
    supervisor = current_supervisor()
    if supervisor is not None:
        return lambda _settings: supervisor.check()
    state = request.app.state
    if not hasattr(state, "heartbeat_check"):
        state.heartbeat_check = _CachedCheck(check_heartbeat, WORKER_CHECK_TTL_S)
    check: Callable[[Settings], None] = state.heartbeat_check
    return check


def check_metrics_token(settings: Settings, authorization: str | None) -> None:
    """404 while metrics are off; 401 unless ``authorization`` is ``Bearer <token>``."""
    if settings.metrics_token is None:
        raise NotFoundError("metrics are off: set METACLUSTER_METRICS_TOKEN to scrape them")
    scheme, _, given = (authorization or "").partition(" ")
    expected = settings.metrics_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise UnauthorizedError("/metrics needs Authorization: Bearer <METACLUSTER_METRICS_TOKEN>")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
        **problem_responses(401, 404),
    },
    summary="Prometheus metrics (Bearer METACLUSTER_METRICS_TOKEN; aggregates, no tenant data)",
)
async def metrics(request: Request, settings: SettingsDep) -> Response:
    check_metrics_token(settings, request.headers.get("authorization"))
    registry = request.app.state.metrics.registry
    assert isinstance(request.app.state.metrics, Metrics)
    payload = await run_in_threadpool(generate_latest, registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
