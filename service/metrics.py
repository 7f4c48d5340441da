"""Prometheus metrics: request counts and latency, jobs by status, stage durations.

Job gauges and stage histograms are read from the database at scrape time, because
workers run in other processes; the job rows are the record of truth.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.db.models import JOB_STATUSES
from core.db.session import session_scope
from core.repositories import JobRepository
from core.settings import Settings

log = logging.getLogger(__name__)

STAGE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class JobCollector(Collector):
    """Jobs by status and stage durations of recent successful jobs, from the database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        try:
            with session_scope(self.settings) as session:
                repo = JobRepository(session)
                counts = repo.count_by_status()
                stages = repo.recent_stage_durations()
        except Exception as exc:  # a scrape must not fail because the DB blips
            log.warning("job metrics unavailable: %r", exc)
            return
        gauge = GaugeMetricFamily(
            "metacluster_jobs", "Jobs by status (from the database)", labels=["status"]
        )
        for status in JOB_STATUSES:
            gauge.add_metric([status], counts.get(status, 0))
        yield gauge
        yield from _stage_histogram(stages)


def _stage_histogram(stages: list[dict[str, object]]) -> Iterator[Metric]:
    hist = HistogramMetricFamily(
        "metacluster_stage_duration_seconds",
        "Wall-clock seconds per compression stage, over the last 500 succeeded jobs",
        labels=["stage"],
    )
    by_stage: dict[str, list[float]] = {}
    for job_stages in stages:
        for name, seconds in job_stages.items():
            if isinstance(seconds, int | float):
                by_stage.setdefault(str(name), []).append(float(seconds))
    for name, values in sorted(by_stage.items()):
        buckets = [(str(b), sum(v <= b for v in values)) for b in STAGE_BUCKETS]
        buckets.append(("+Inf", len(values)))
        hist.add_metric([name], buckets, sum_value=sum(values))
    yield hist


class Metrics:
    """The app's own registry, so several apps (tests) in one process do not collide."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "metacluster_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "metacluster_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(JobCollector(settings))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route).observe(seconds)
        self.requests.labels(method, route, str(status)).inc()


class MetricsMiddleware:
    """Plain ASGI middleware (no per-request task or body stream, unlike
    `BaseHTTPMiddleware`): counts and times every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = str(getattr(scope.get("route"), "path", "unmatched"))
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)
