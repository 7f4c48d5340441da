"""``/healthz`` (process up), ``/readyz`` (database and broker reachable), ``/metrics``.

These need no API key: orchestrators and Prometheus call them.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from core.db.session import get_engine
from core.settings import Settings
from service.deps import SettingsDep
from service.metrics import Metrics
from service.schemas import HealthOut, ReadyOut

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


def check_database(settings: Settings) -> None:
    with get_engine(settings).connect() as conn:
        conn.execute(text("SELECT 1"))


def check_broker(settings: Settings) -> None:
    from kombu.connection import Connection

    timeout = settings.broker_timeout_s
    with Connection(settings.broker, connect_timeout=timeout) as conn:  # type: ignore[no-untyped-call]
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)


@router.get("/healthz", response_model=HealthOut, summary="Liveness: the process answers")
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "Database or broker unreachable"}},
    summary="Readiness: database and broker reachable",
)
async def readyz(settings: SettingsDep) -> JSONResponse:
    checks: dict[str, str] = {}
    for name, check in (("database", check_database), ("broker", check_broker)):
        try:
            await run_in_threadpool(check, settings)
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readiness check %s failed: %r", name, exc)
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    ok = all(v == "ok" for v in checks.values())
    body = ReadyOut(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    assert isinstance(request.app.state.metrics, Metrics)
    payload = await run_in_threadpool(generate_latest, registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
