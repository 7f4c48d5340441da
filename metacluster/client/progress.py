"""What `wait` shows while it waits: a tqdm bar on stderr with the stage and the overall
percent, and the caller's `on_event` callback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from metacluster.client.records import Event, Job


class ProgressBar:
    """A tqdm bar on stderr with the stage and the overall percent."""

    def __init__(self, enabled: bool, job_id: str) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=100,
                desc=f"{job_id[:16]} queued",
                unit="%",
                file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
            )
        self.stage: str | None = None

    def job(self, job: Job) -> None:
        self._show(job.id, job.status, job.stage, job.progress)

    def event(self, job_id: str, event: Event) -> None:
        status = (event.data or {}).get("status") if event.kind == "status" else None
        self._show(job_id, status, event.stage, event.progress)

    def _show(
        self, job_id: str, status: str | None, stage: str | None, progress: float | None
    ) -> None:
        if self.bar is None:
            return
        label = stage or status or self.stage
        if label and label != self.stage:
            self.stage = label
            self.bar.set_description_str(f"{job_id[:16]} {label}", refresh=False)
        if progress is not None:
            self.bar.n = round(100 * min(max(progress, 0.0), 1.0), 1)
        self.bar.refresh()

    def close(self, job: Job | None = None) -> None:
        if self.bar is None:
            return
        if job is not None:
            if job.succeeded:
                self.bar.n = 100
            self.bar.set_description_str(f"{job.id[:16]} {job.status}", refresh=False)
            self.bar.refresh()
        self.bar.close()
        self.bar = None


class Watch:
    """One `wait` on a job: its progress bar and the caller's callback, fed what comes."""

    def __init__(
        self, job: Job, *, progress: bool, on_event: Callable[[Event], None] | None
    ) -> None:
        self.job_id = job.id
        self.bar = ProgressBar(progress and not job.finished, job.id)
        self.bar.job(job)
        self.on_event = on_event

    def event(self, event: Event) -> None:
        """An event of the stream."""
        self.bar.event(self.job_id, event)
        if self.on_event is not None:
            self.on_event(event)

    def polled(self, job: Job) -> None:
        """The job as a poll found it."""
        self.bar.job(job)

    def close(self, job: Job) -> None:
        self.bar.close(job if job.finished else None)
