"""Prometheus metrics: request counts and latency, jobs by status, stage durations.

Job gauges and stage histograms are read from the database at scrape time, because
workers run in other processes; the job rows are the record of truth.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

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

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = _route_template(request)
            self.latency.labels(request.method, route).observe(time.perf_counter() - start)
            self.requests.labels(request.method, route, str(status)).inc()


def _route_template(request: Request) -> str:
    """The matched route's path template (set by the router), so ids stay out of labels."""
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))
